//! Handler-level tests: REST rules through the real router (tower's `oneshot`, no socket)
//! against a real PostgreSQL (a private cluster of the machine's binaries), without a broker or
//! runtime node. The end-to-end suites in `cli/tests` cover the same API over HTTP with every
//! part running; these pin the rules themselves, one request at a time.

use std::net::SocketAddr;

use aerogrid_devstack::{DataDirLock, PrivatePostgres};
use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use clap::Parser as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{ServerArgs, ServerState, db, secret};

/// The server's settings with their production defaults (as `aerogrid server` with no flags).
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    server: ServerArgs,
}

struct Harness {
    router: Router,
    db: sqlx::PgPool,
    admin: String,
    _postgres: PrivatePostgres,
    _lock: DataDirLock,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let postgres = PrivatePostgres::start(&dir.path().join("postgres"), &lock).await.unwrap();
        let pool = db::connect(postgres.url()).await.unwrap();
        db::migrate(&pool).await.unwrap();
        let admin = crate::bootstrap::ensure_dev_admin(&pool, None).await.unwrap().token;
        let server = Defaults::parse_from(["test"]).server;
        // No broker: nothing these requests do reaches it.
        let kafka = aerogrid_kafka::KafkaSettings::new("127.0.0.1:1");
        // uv as the tests have it (AEROGRID_UV), its cache in this test's directory.
        let python = aerogrid_packages::PythonArgs {
            uv: std::env::var_os("AEROGRID_UV").map(Into::into),
            ..Default::default()
        };
        let packages = python.settings(Some(dir.path()));
        let state = ServerState::new(pool.clone(), kafka, &server, packages).unwrap();
        let router = super::router(state, Router::new());
        Self { router, db: pool, admin, _postgres: postgres, _lock: lock, _dir: dir }
    }

    /// Sends one request with `token`; the status and the JSON answer (Null when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        self.send(method, path, token, &[], body).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(header::HeaderName, &str)],
        body: Body,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// As the admin; panics unless the answer is 2xx.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, &self.admin, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// A user (who never signs in) and a personal token of theirs.
    async fn user(&self, name: &str) -> String {
        let user = db::accounts::create_user(&self.db, name, "unused").await.unwrap();
        let token = secret::generate(secret::API_TOKEN_PREFIX);
        db::accounts::insert_api_token(&self.db, user.id, None, "test", &secret::digest(&token))
            .await
            .unwrap();
        token
    }
}

/// A problem document's `detail`, after checking it is one.
fn detail(answer: &Value) -> &str {
    assert_eq!(answer["type"], "about:blank", "{answer}");
    answer["detail"].as_str().unwrap_or_else(|| panic!("no detail in {answer}"))
}

const CODE: &str = "import aerogrid\napp = aerogrid.App('handlers')\n";

// One test, one database: starting PostgreSQL is most of its time, and the cases use names of
// their own, so they cannot see each other's rows.
#[tokio::test(flavor = "multi_thread")]
async fn rest_rules_hold_request_by_request() {
    let harness = Harness::start().await;
    unknown_fields_are_refused(&harness).await;
    saves_over_a_newer_version_conflict(&harness).await;
    roles_decide_and_strangers_see_nothing(&harness).await;
    a_team_keeps_an_owner(&harness).await;
    quotas_and_sizes_are_refused_with_their_reason(&harness).await;
}

async fn unknown_fields_are_refused(harness: &Harness) {
    harness.admin(Method::POST, "/teams", Some(json!({ "name": "fields" }))).await;
    harness
        .admin(Method::POST, "/teams/fields/apps", Some(json!({ "name": "a", "code": CODE })))
        .await;
    // A misspelled base_version must not become a save without its conflict check.
    let body = json!({ "code": CODE, "base_verison": 1 });
    let (status, answer) =
        harness.call(Method::PUT, "/teams/fields/apps/a", &harness.admin, Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(detail(&answer).contains("unknown field `base_verison`"), "{answer}");
    let versions = harness.admin(Method::GET, "/teams/fields/apps/a/versions", None).await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "nothing was saved: {versions}");
    let (status, answer) = harness
        .call(Method::POST, "/teams", &harness.admin, Some(json!({ "name": "x", "owner": "y" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // And a body that is not JSON at all is a problem document too.
    let (status, answer) =
        harness.send(Method::POST, "/teams", &harness.admin, &[], Body::from("{\"name\": ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    detail(&answer);
}

async fn saves_over_a_newer_version_conflict(harness: &Harness) {
    harness.admin(Method::POST, "/teams", Some(json!({ "name": "saves" }))).await;
    harness
        .admin(Method::POST, "/teams/saves/apps", Some(json!({ "name": "a", "code": CODE })))
        .await;
    let path = "/teams/saves/apps/a";
    let saved =
        harness.admin(Method::PUT, path, Some(json!({ "code": CODE, "base_version": 1 }))).await;
    assert_eq!(saved["version"], 2);
    let (status, answer) = harness
        .call(Method::PUT, path, &harness.admin, Some(json!({ "code": CODE, "base_version": 1 })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // If-Match says the same, and may not disagree with the body.
    let body = Body::from(json!({ "code": CODE }).to_string());
    let (status, _) =
        harness.send(Method::PUT, path, &harness.admin, &[(header::IF_MATCH, "\"1\"")], body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let body = Body::from(json!({ "code": CODE, "base_version": 2 }).to_string());
    let (status, answer) =
        harness.send(Method::PUT, path, &harness.admin, &[(header::IF_MATCH, "\"1\"")], body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(detail(&answer), "If-Match and base_version disagree");
    let body = Body::from(json!({ "code": CODE }).to_string());
    let (status, _) =
        harness.send(Method::PUT, path, &harness.admin, &[(header::IF_MATCH, "\"2\"")], body).await;
    assert_eq!(status, StatusCode::OK);
}

async fn roles_decide_and_strangers_see_nothing(harness: &Harness) {
    harness.admin(Method::POST, "/teams", Some(json!({ "name": "roles" }))).await;
    harness
        .admin(Method::POST, "/teams/roles/apps", Some(json!({ "name": "a", "code": CODE })))
        .await;
    let viewer = harness.user("roles-viewer").await;
    let stranger = harness.user("roles-stranger").await;
    harness
        .admin(Method::PUT, "/teams/roles/members/roles-viewer", Some(json!({ "role": "viewer" })))
        .await;
    let save = json!({ "code": CODE });
    let (status, _) = harness.call(Method::GET, "/teams/roles/apps/a", &viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) =
        harness.call(Method::PUT, "/teams/roles/apps/a", &viewer, Some(save.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // A stranger cannot tell a team that exists from one that does not.
    let (exists, _) = harness.call(Method::GET, "/teams/roles/apps/a", &stranger, None).await;
    let (missing, _) = harness.call(Method::GET, "/teams/nothing/apps/a", &stranger, None).await;
    assert_eq!((exists, missing), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    // A role is one of three words.
    let (status, _) = harness
        .call(
            Method::PUT,
            "/teams/roles/members/roles-stranger",
            &harness.admin,
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
}

async fn a_team_keeps_an_owner(harness: &Harness) {
    // (A user's own new team would need a broker, to check its namespace is free.)
    let owner = harness.user("keeper").await;
    harness.admin(Method::POST, "/teams", Some(json!({ "name": "kept" }))).await;
    let role = json!({ "role": "owner" });
    harness.admin(Method::PUT, "/teams/kept/members/keeper", Some(role)).await;
    let admin = harness.admin(Method::GET, "/me", None).await;
    let admin = admin["name"].as_str().unwrap();
    harness.admin(Method::DELETE, &format!("/teams/kept/members/{admin}"), None).await;
    let (status, answer) =
        harness.call(Method::DELETE, "/teams/kept/members/keeper", &owner, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = harness
        .call(Method::PUT, "/teams/kept/members/keeper", &owner, Some(json!({ "role": "editor" })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
}

async fn quotas_and_sizes_are_refused_with_their_reason(harness: &Harness) {
    harness.admin(Method::POST, "/teams", Some(json!({ "name": "quota" }))).await;
    let quotas = json!({ "quotas": { "apps": 1 } });
    let team = harness.admin(Method::PATCH, "/teams/quota", Some(quotas)).await;
    assert_eq!(team["quotas"]["apps"], 1, "{team}");
    let (status, answer) = harness
        .call(
            Method::PATCH,
            "/teams/quota",
            &harness.admin,
            Some(json!({ "quotas": { "apps": -1 } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    harness
        .admin(Method::POST, "/teams/quota/apps", Some(json!({ "name": "one", "code": CODE })))
        .await;
    let (status, answer) = harness
        .call(
            Method::POST,
            "/teams/quota/apps",
            &harness.admin,
            Some(json!({ "name": "two", "code": CODE })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let too_big = "#".repeat(crate::validate::MAX_CODE_BYTES + 1);
    let (status, answer) = harness
        .call(
            Method::PUT,
            "/teams/quota/apps/one",
            &harness.admin,
            Some(json!({ "code": too_big })),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, answer) = harness
        .call(
            Method::PATCH,
            "/teams/quota/apps/one",
            &harness.admin,
            Some(json!({ "memory_limit_mib": 70000 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(detail(&answer).contains("memory_limit_mib is 1 to 65536"), "{answer}");
}
