//! `/metrics` in Prometheus' text format: HTTP requests and their latencies by route, apps by
//! state, records in, bad records, lag, and grid subscribers.
//!
//! Figures are totals over all teams: per-app series would name every team's apps to anyone who
//! can reach the endpoint (the app's own figures are in its status).

use crate::LockExt as _;
use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{Result, ServerState, db::apps};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request counts and latencies by (method, route, status).
#[derive(Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

impl HttpMetrics {
    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.locked();
        let histogram = requests.entry((method.to_owned(), route.to_owned(), status)).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn render(&self, out: &mut String) {
        let requests = self.requests.locked();
        out.push_str("# HELP aerogrid_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE aerogrid_http_requests_total counter\n");
        for ((method, route, status), histogram) in requests.iter() {
            let _ = writeln!(
                out,
                "aerogrid_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                histogram.count
            );
        }
        out.push_str("# HELP aerogrid_http_request_duration_seconds Time to answer HTTP requests (to the response head).\n");
        out.push_str("# TYPE aerogrid_http_request_duration_seconds histogram\n");
        for ((method, route, status), histogram) in requests.iter() {
            let labels =
                format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route));
            for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
                let _ = writeln!(
                    out,
                    "aerogrid_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "aerogrid_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "aerogrid_http_request_duration_seconds_sum{{{labels}}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "aerogrid_http_request_duration_seconds_count{{{labels}}} {}",
                histogram.count
            );
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Times every request, labelled with its route's template (not its path: bounded labels).
pub(crate) async fn record(
    State(state): State<ServerState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    state.inner.http_metrics.observe(&method, &route, response.status().as_u16(), seconds);
    response
}

/// The HTTP methods a label may name; any other (hyper accepts any token) is `OTHER`, so that
/// requests with made-up methods cannot grow the metrics without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<ServerState>) -> Result<Response> {
    let totals = apps::totals(state.db()).await?;
    let mut out = String::new();
    out.push_str("# HELP aerogrid_apps Apps by the state their runtime reports.\n");
    out.push_str("# TYPE aerogrid_apps gauge\n");
    for state in aerogrid_api::AppState::ALL {
        let count = totals.states.iter().find(|(name, _)| name == state).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "aerogrid_apps{{state=\"{state}\"}} {count}");
    }
    let applied = crate::gateway::applied_records();
    let gauges = [
        (
            "aerogrid_records_in",
            "gauge",
            "Input records processed, summed over existing apps.",
            totals.records_in,
        ),
        (
            "aerogrid_bad_records",
            "gauge",
            "Input records apps could not process, summed over existing apps.",
            totals.bad_records,
        ),
        (
            "aerogrid_consumer_lag",
            "gauge",
            "Input records not yet processed, over all apps.",
            totals.lag,
        ),
        (
            "aerogrid_grid_subscribers",
            "gauge",
            "Open grid subscriptions on this server.",
            i64::try_from(crate::gateway::subscriber_count()).unwrap_or(i64::MAX),
        ),
        (
            "aerogrid_grid_feeds",
            "gauge",
            "Changelog consumers running on this server (one per app with subscribers).",
            i64::try_from(crate::gateway::running_feeds()).unwrap_or(i64::MAX),
        ),
        (
            "aerogrid_grid_feed_records_from_changelog_total",
            "counter",
            "Changelog records the grid feeds applied as read back from the broker.",
            i64::try_from(applied.0).unwrap_or(i64::MAX),
        ),
        (
            "aerogrid_grid_feed_records_relayed_total",
            "counter",
            "Changelog records the grid feeds applied as relayed by the runtime node (sooner).",
            i64::try_from(applied.1).unwrap_or(i64::MAX),
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    state.inner.http_metrics.render(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let made_up = axum::http::Method::from_bytes(b"M12345AAAA").unwrap();
        assert_eq!(method_label(&made_up), "OTHER");
        assert_eq!(method_label(&axum::http::Method::DELETE), "DELETE");
    }
}
