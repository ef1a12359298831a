//! A small client of the REST API for tests: requests as a given caller, answers as JSON.

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

/// Who sends a request.
#[derive(Clone, Debug)]
pub(crate) enum Credentials {
    None,
    Token(String),
    /// A session cookie and its CSRF token.
    Session {
        cookie: String,
        csrf: String,
    },
}

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    /// The dev stack's admin.
    pub(crate) admin: Credentials,
}

impl Api {
    pub(crate) fn new(stack: &super::DevStack) -> Self {
        Self {
            client: super::http(),
            base: stack.url.clone(),
            admin: Credentials::Token(stack.file("admin-token")),
        }
    }

    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        credentials: &Credentials,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        match credentials {
            Credentials::None => {}
            Credentials::Token(token) => request = request.bearer_auth(token),
            Credentials::Session { cookie, csrf } => {
                request = request.header(header::COOKIE, cookie).header("x-csrf-token", csrf);
            }
        }
        request
    }

    /// Sends `body` (if any) and returns the status and the JSON answer (Null when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        credentials: &Credentials,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path, credentials);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// As the admin; panics unless the answer is 2xx.
    pub(crate) async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, &self.admin, body).await;
        assert!(status.is_success(), "{method} {path} as admin: {status} {value}");
        value
    }

    /// Creates a user with `password` (as the admin).
    pub(crate) async fn create_user(&self, name: &str, password: &str) {
        self.admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "name": name, "password": password })),
        )
        .await;
    }

    /// Signs in with a password: the session's cookie and CSRF token.
    pub(crate) async fn sign_in(&self, name: &str, password: &str) -> Credentials {
        let response = self
            .client
            .post(format!("{}/api/v1/auth/sign-in", self.base))
            .json(&json!({ "name": name, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "sign-in of {name}");
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let me: Value = response.json().await.unwrap();
        let csrf = me["csrf_token"].as_str().unwrap().to_owned();
        Credentials::Session { cookie, csrf }
    }

    /// Mints a token of `team` as `credentials`.
    pub(crate) async fn token(
        &self,
        credentials: &Credentials,
        team: &str,
        scope: &str,
    ) -> Credentials {
        let (status, value) = self
            .call(
                Method::POST,
                &format!("/api/v1/teams/{team}/tokens"),
                credentials,
                Some(json!({ "name": format!("{scope} token"), "scope": scope })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        Credentials::Token(value["token"].as_str().unwrap().to_owned())
    }
}
