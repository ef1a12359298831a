//! `/api/v1/openapi.json` and `/api/v1/docs`, a browsable page of the same document rendered
//! here (no script or style from elsewhere: it works offline and under a strict CSP).

use std::{fmt::Write, sync::Arc};

use axum::{
    Json, Router,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};
use utoipa::openapi::{OpenApi, RefOr, path::Operation};

use crate::ServerState;

pub(crate) fn router(document: Arc<OpenApi>) -> Router<ServerState> {
    let page = Arc::new(render(&document));
    let json = Arc::new(serde_json::to_value(&*document).unwrap_or_default());
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { Json((*json).clone()).into_response() }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move {
                    ([(header::CACHE_CONTROL, "no-cache")], Html((*page).clone())).into_response()
                }
            }),
        )
}

fn render(api: &OpenApi) -> String {
    let mut out = String::new();
    let title = escape(&api.info.title);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2330}}\
         code,pre{{font:13px ui-monospace,monospace}}section{{border-top:1px solid #dde;padding:.5rem 0}}\
         .m{{display:inline-block;min-width:4.5rem;font-weight:600}}.get{{color:#1a7f37}}.post{{color:#0550ae}}\
         .put,.patch{{color:#9a6700}}.delete{{color:#cf222e}}details{{margin:.25rem 0 .25rem 5rem}}</style></head><body>\
         <h1>{title} <small>{}</small></h1><p>{}</p><p>The machine-readable document: \
         <a href=\"openapi.json\"><code>/api/v1/openapi.json</code></a> (OpenAPI 3.1).</p>",
        escape(&api.info.version),
        escape(api.info.description.as_deref().unwrap_or_default()),
    );
    for (path, item) in &api.paths.paths {
        let operations = [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                render_operation(&mut out, method, path, operation);
            }
        }
    }
    out.push_str("</body></html>");
    out
}

fn render_operation(out: &mut String, method: &str, path: &str, operation: &Operation) {
    let _ = write!(
        out,
        "<section><span class=\"m {method}\">{}</span><code>{}</code><br>{}",
        method.to_uppercase(),
        escape(path),
        escape(operation.summary.as_deref().unwrap_or_default())
    );
    if let Some(description) = &operation.description {
        let _ = write!(out, "<details><summary>more</summary><p>{}</p>", escape(description));
    } else {
        out.push_str("<details><summary>more</summary>");
    }
    if let Some(parameters) = &operation.parameters {
        out.push_str("<p>Parameters: ");
        let names: Vec<String> = parameters
            .iter()
            .filter_map(|parameter| match parameter {
                RefOr::T(parameter) => Some(format!("<code>{}</code>", escape(&parameter.name))),
                RefOr::Ref(_) => None,
            })
            .collect();
        out.push_str(&names.join(", "));
        out.push_str("</p>");
    }
    if let Some(RefOr::T(body)) = &operation.request_body {
        for (content_type, content) in &body.content {
            let RefOr::T(content) = content else { continue };
            let _ = write!(
                out,
                "<p>Body ({}): <code>{}</code></p>",
                escape(content_type),
                schema_name(content.schema.as_ref())
            );
        }
    }
    out.push_str("<p>Answers: ");
    let answers: Vec<String> = operation
        .responses
        .responses
        .iter()
        .map(|(status, response)| match response {
            RefOr::T(response) => {
                let schema = response
                    .content
                    .values()
                    .next()
                    .and_then(|content| match content {
                        RefOr::T(content) => {
                            Some(format!(" <code>{}</code>", schema_name(content.schema.as_ref())))
                        }
                        RefOr::Ref(_) => None,
                    })
                    .unwrap_or_default();
                format!("{status}{schema}")
            }
            RefOr::Ref(_) => status.clone(),
        })
        .collect();
    out.push_str(&answers.join(" · "));
    out.push_str("</p></details></section>");
}

fn schema_name(schema: Option<&RefOr<utoipa::openapi::Schema>>) -> String {
    match schema {
        Some(RefOr::Ref(reference)) => {
            escape(reference.ref_location.rsplit('/').next().unwrap_or_default())
        }
        Some(RefOr::T(utoipa::openapi::Schema::Array(array))) => match &array.items {
            utoipa::openapi::schema::ArrayItems::RefOrSchema(item) => {
                format!("[{}]", schema_name(Some(item)))
            }
            _ => "array".to_owned(),
        },
        Some(RefOr::T(_)) => "inline".to_owned(),
        None => String::new(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
