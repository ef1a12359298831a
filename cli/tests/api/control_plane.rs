//! The control plane through its REST API on a real `aerogrid dev`: versions and conflicts,
//! sessions, tokens, validation, and an app's whole lifecycle (who may do what is
//! `authorization`).

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{
    DevStack,
    api::{Api, Credentials},
};

pub(crate) const SEED: &str = include_str!("../../../connector/python/tests/seed.py");
pub(crate) const PASSWORD: &str = "correct horse battery";

/// A team `acme` that may read topic `orders`, and an app `orders` with the seed code, made by
/// the admin.
async fn acme_with_orders(api: &Api) {
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let app = json!({ "name": "orders", "code": SEED });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(app)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn saves_conflict_instead_of_overwriting_and_versions_compare_and_roll_back() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_with_orders(&api).await;
    let path = "/api/v1/teams/acme/apps/orders";

    // Eight editors save over version 1 at once: one wins, seven are told to reload.
    let saves = (0..8).map(|n| {
        let api = api.clone();
        async move {
            let code = SEED.replace("units_sold", &format!("units_{n}"));
            let body = json!({ "code": code, "base_version": 1 });
            api.call(Method::PUT, path, &api.admin, Some(body)).await
        }
    });
    let answers = futures::future::join_all(saves).await;
    let won: Vec<_> = answers.iter().filter(|(status, _)| *status == StatusCode::OK).collect();
    let conflicts = answers.iter().filter(|(status, _)| *status == StatusCode::CONFLICT).count();
    assert_eq!((won.len(), conflicts), (1, 7), "{answers:?}");
    assert_eq!(won[0].1["version"], 2);
    let conflict = &answers.iter().find(|(status, _)| *status == StatusCode::CONFLICT).unwrap().1;
    assert!(conflict["detail"].as_str().unwrap().contains("saved by someone else"), "{conflict}");

    // If-Match does the same: a stale ETag is refused, the current one saves.
    let (status, app) = api.call(Method::GET, path, &api.admin, None).await;
    assert_eq!((status, app["version"].as_i64()), (StatusCode::OK, Some(2)));
    let stale = api
        .request(Method::PUT, path, &api.admin)
        .header(header::IF_MATCH, "\"1\"")
        .json(&json!({ "code": SEED }))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let current = api
        .request(Method::PUT, path, &api.admin)
        .header(header::IF_MATCH, "\"2\"")
        .json(&json!({ "code": SEED }))
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()[header::ETAG], "\"3\"");
    let malformed = api
        .request(Method::PUT, path, &api.admin)
        .header(header::IF_MATCH, "version three")
        .json(&json!({ "code": SEED }))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    // Nothing was lost: every saved version is listed, and they compare.
    let versions = api.admin(Method::GET, &format!("{path}/versions"), None).await;
    let numbers: Vec<i64> =
        versions.as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![3, 2, 1]);
    assert_eq!(versions[2]["note"], "created");
    let diff = api.admin(Method::GET, &format!("{path}/versions/2/diff?to=3"), None).await;
    let text = diff["diff"].as_str().unwrap();
    assert!(text.contains("--- version 2") && text.contains("+++ version 3"), "{text}");
    assert!(text.contains("-product_sum = app.Grid('product_sum', columns=['units_"), "{text}");
    assert!(
        text.contains("+product_sum = app.Grid('product_sum', columns=['units_sold']"),
        "{text}"
    );
    let same = api.admin(Method::GET, &format!("{path}/versions/1/diff?to=3"), None).await;
    assert_eq!(same["diff"], "", "versions 1 and 3 hold the same code");

    // Rolling back to version 2 makes version 4 with its code.
    let rolled = api.admin(Method::POST, &format!("{path}/versions/2/rollback"), None).await;
    assert_eq!((rolled["version"].as_i64(), rolled["restarted"].as_bool()), (Some(4), Some(false)));
    let v2 = api.admin(Method::GET, &format!("{path}/versions/2"), None).await;
    let v4 = api.admin(Method::GET, &format!("{path}/versions/4"), None).await;
    assert_eq!(v2["code"], v4["code"]);
    let (status, missing) =
        api.call(Method::GET, &format!("{path}/versions/99"), &api.admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    // The audit log tells who did it.
    let audit = api.admin(Method::GET, "/api/v1/teams/acme/audit?limit=3", None).await;
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|event| event["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["app.rollback", "app.save", "app.save"]);
    assert_eq!(audit[0]["actor"], "admin");

    // `If-Match: *` asks for no particular version.
    let any = api
        .request(Method::PUT, path, &api.admin)
        .header(header::IF_MATCH, "*")
        .json(&json!({ "code": SEED }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (any.status(), any.headers()[header::ETAG].to_str().unwrap()),
        (StatusCode::OK, "\"5\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_need_the_csrf_token_and_sign_in_is_rate_limited() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    api.create_user("alice", PASSWORD).await;
    let Credentials::Session { cookie, csrf } = api.sign_in("alice", PASSWORD).await else {
        unreachable!()
    };

    // With the cookie alone (what a page of another origin could send), writes are refused.
    let forged = api
        .client
        .post(format!("{}/api/v1/teams", api.base))
        .header(header::COOKIE, &cookie)
        .json(&json!({ "name": "forged" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let problem: Value = forged.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("x-csrf-token"), "{problem}");
    let session = Credentials::Session { cookie: cookie.clone(), csrf: csrf.clone() };
    let (status, team) =
        api.call(Method::POST, "/api/v1/teams", &session, Some(json!({ "name": "mine" }))).await;
    assert_eq!((status, team["role"].as_str()), (StatusCode::CREATED, Some("owner")));
    // Reads need no token; `me` gives it to a page that lost it.
    let me = api.client.get(format!("{}/api/v1/me", api.base)).header(header::COOKIE, &cookie);
    let me: Value = me.send().await.unwrap().json().await.unwrap();
    assert_eq!(me["csrf_token"], csrf.as_str());

    // A changed password ends the user's other sessions, not the one that changed it.
    let elsewhere = api.sign_in("alice", PASSWORD).await;
    let change = json!({ "current_password": PASSWORD, "new_password": "a new long password" });
    let wrong = json!({ "current_password": "not the password", "new_password": "whatever it is" });
    let (status, _) = api.call(Method::PUT, "/api/v1/me/password", &session, Some(wrong)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.call(Method::PUT, "/api/v1/me/password", &session, Some(change)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::GET, "/api/v1/me", &elsewhere, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the other session ended");
    let (status, _) = api.call(Method::GET, "/api/v1/me", &session, None).await;
    assert_eq!(status, StatusCode::OK, "this one stays");
    api.sign_in("alice", "a new long password").await;

    // Signing out ends the session.
    let (status, _) = api.call(Method::POST, "/api/v1/auth/sign-out", &session, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::GET, "/api/v1/me", &session, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Five wrong passwords, then even the right one waits.
    let attempt = |password: &'static str| {
        api.client
            .post(format!("{}/api/v1/auth/sign-in", api.base))
            .json(&json!({ "name": "alice", "password": password }))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong password!").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let locked = attempt("a new long password").await.unwrap();
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = locked.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // Unknown users and short passwords get clear answers; the stored hash is argon2id.
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/sign-in",
            &Credentials::None,
            Some(json!({ "name": "nobody", "password": "whatever it is" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Attempts are counted before the password is verified: forty at once for one name get
    // five verifies, not forty.
    api.create_user("carol", PASSWORD).await;
    let burst = futures::future::join_all((0..40).map(|_| {
        api.client
            .post(format!("{}/api/v1/auth/sign-in", api.base))
            .json(&json!({ "name": "carol", "password": "not carol's password" }))
            .send()
    }))
    .await;
    let mut statuses = BTreeMap::new();
    for response in burst {
        *statuses.entry(response.unwrap().status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(401, 5), (429, 35)]), "{statuses:?}");
    let (status, short) = api
        .call(
            Method::POST,
            "/api/v1/users",
            &api.admin,
            Some(json!({ "name": "bob", "password": "short" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{short}");
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE name = 'alice'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_revocable_and_die_with_their_users_membership() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_with_orders(&api).await;
    api.create_user("bob", PASSWORD).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/members/bob", Some(json!({ "role": "editor" })))
        .await;
    let bob = api.sign_in("bob", PASSWORD).await;
    let first = api.token(&bob, "acme", "manage").await;
    let second = api.token(&bob, "acme", "read").await;
    let (status, _) = api.call(Method::GET, "/api/v1/teams/acme/apps", &first, None).await;
    assert_eq!(status, StatusCode::OK);

    // Listed without their secrets; revoked, a token is refused at once.
    let (_, listed) = api.call(Method::GET, "/api/v1/teams/acme/tokens", &bob, None).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|token| token.get("token").is_none()), "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap();
    let (status, _) =
        api.call(Method::DELETE, &format!("/api/v1/teams/acme/tokens/{id}"), &bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, refused) = api.call(Method::GET, "/api/v1/teams/acme/apps", &first, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");

    // Once bob leaves the team, his remaining token is revoked with his membership (REST and
    // gRPC share the check), and being added again does not bring it back.
    let (status, _) = api.call(Method::GET, "/api/v1/teams/acme/apps", &second, None).await;
    assert_eq!(status, StatusCode::OK);
    api.admin(Method::DELETE, "/api/v1/teams/acme/members/bob", None).await;
    let (status, refused) = api.call(Method::GET, "/api/v1/teams/acme/apps", &second, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("unknown or revoked"), "{refused}");
    api.admin(Method::PUT, "/api/v1/teams/acme/members/bob", Some(json!({ "role": "editor" })))
        .await;
    let (status, refused) = api.call(Method::GET, "/api/v1/teams/acme/apps", &second, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    let audit = api.admin(Method::GET, "/api/v1/teams/acme/audit", None).await;
    let removal = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["action"] == "member.remove")
        .expect("the removal is audited");
    assert_eq!(removal["detail"]["tokens_revoked"], 1, "{removal}");
    api.admin(Method::DELETE, "/api/v1/teams/acme/members/bob", None).await;
    let Credentials::Token(secret) = &second else { unreachable!() };
    let snapshot = stack.snapshot("acme/orders/product_sum", secret);
    let stderr = String::from_utf8_lossy(&snapshot.stderr);
    assert!(!snapshot.status.success() && stderr.contains("Unauthenticated"), "{stderr}");

    // The last owner cannot leave the team without an owner.
    let (status, problem) =
        api.call(Method::DELETE, "/api/v1/teams/acme/members/admin", &api.admin, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_gives_diagnostics_and_start_refuses_an_invalid_draft() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_with_orders(&api).await;

    let broken = SEED.replace("async def sum_orders(orders):", "async def sum_orders(orders)");
    let answer =
        api.admin(Method::POST, "/api/v1/validate", Some(json!({ "code": broken.clone() }))).await;
    let diagnostics = answer["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{answer}");
    assert_eq!(diagnostics[0]["line"], 15);
    assert_eq!(diagnostics[0]["severity"], "error");
    assert!(diagnostics[0]["message"].as_str().unwrap().starts_with("SyntaxError"), "{answer}");
    assert!(diagnostics[0]["column"].as_u64().unwrap() >= 1);

    let refused = "import aerogrid\nimport socket\napp = aerogrid.App('a')\n";
    let answer =
        api.admin(Method::POST, "/api/v1/validate", Some(json!({ "code": refused }))).await;
    assert_eq!(answer["diagnostics"][0]["line"], 2, "{answer}");
    assert_eq!(answer["diagnostics"][0]["severity"], "warning", "{answer}");

    // The invalid draft saves, with its diagnostics; Start refuses it and says why.
    let path = "/api/v1/teams/acme/apps/orders";
    let saved = api.admin(Method::PUT, path, Some(json!({ "code": broken }))).await;
    assert_eq!(saved["diagnostics"][0]["line"], 15, "{saved}");
    let (status, problem) =
        api.call(Method::POST, &format!("{path}/start"), &api.admin, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["diagnostics"][0]["line"], 15, "{problem}");
    let status = api.admin(Method::GET, &format!("{path}/status"), None).await;
    assert_eq!(status["state"], "stopped");
    // The valid version 1 may still run.
    let started = api.admin(Method::POST, &format!("{path}/start?version=1"), None).await;
    assert_eq!(started["run_version"], 1);

    // Bodies too large and malformed ones are problems too.
    let huge = "x = 1\n".repeat(50_000);
    let (status, _) =
        api.call(Method::POST, "/api/v1/validate", &api.admin, Some(json!({ "code": huge }))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let malformed = api
        .request(Method::POST, "/api/v1/validate", &api.admin)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"code\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(malformed.headers()[header::CONTENT_TYPE], "application/problem+json");
    let (status, bad_name) = api
        .call(
            Method::POST,
            "/api/v1/teams/acme/apps",
            &api.admin,
            Some(json!({ "name": "has/slash", "code": SEED })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_name}");
    // NUL characters (which PostgreSQL cannot store) are refused, not a server error.
    let (status, nul) = api
        .call(
            Method::POST,
            "/api/v1/teams/acme/tokens",
            &api.admin,
            Some(json!({ "name": "bad\u{0}name" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{nul}");
    let (status, nul) = api.call(Method::GET, "/api/v1/teams/ac%00me/apps", &api.admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{nul}");
    let (status, taken) = api
        .call(
            Method::POST,
            "/api/v1/teams/acme/apps",
            &api.admin,
            Some(json!({ "name": "orders", "code": SEED })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
}

/// Prints each order it takes (for the log) and counts them in a grid.
const LOGGING_APP: &str = r#"import aerogrid

app = aerogrid.App('logging', broker=BROKER_URI)
orders_topic = app.topic('orders', key_type=str, value_type=dict)
counts = app.Grid('counts', columns=['n'], default=lambda: {'n': 0})

@app.stream(orders_topic)
async def take(orders):
    async for key, order in orders.items():
        print('took', key)
        counts['all'] = {'n': counts['all']['n'] + 1}
"#;

async fn wait_for_state(api: &Api, path: &str, wanted: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.admin(Method::GET, &format!("{path}/status"), None).await;
        if status["state"] == wanted {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "never {wanted}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_runs_logs_live_restarts_and_deleting_it_leaves_nothing_running() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let body = json!({ "name": "logging", "code": LOGGING_APP });
    let created = api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(body)).await;
    assert_eq!(
        (created["version"].as_i64(), created["diagnostics"].as_array().map(Vec::len)),
        (Some(1), Some(0))
    );
    let path = "/api/v1/teams/acme/apps/logging";

    api.admin(Method::POST, &format!("{path}/start"), None).await;
    let running = wait_for_state(&api, path, "running").await;
    assert_eq!(running["version"], 1);

    // The log, followed live: lines printed after the follow began arrive as events.
    let follow =
        api.request(Method::GET, &format!("{path}/logs/follow"), &api.admin).send().await.unwrap();
    assert_eq!(follow.headers()[header::CONTENT_TYPE], "text/event-stream");
    support::produce_orders(&kafka, 0..3, 1).await;
    let mut events = follow.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(0..3).all(|n| text.contains(&format!("took order-{n}"))) {
        let chunk = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut events))
            .await
            .unwrap_or_else(|_| panic!("the followed log missed lines: {text}"))
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: log") && text.contains("\"level\":\"info\""), "{text}");
    drop(events);
    let lines = api.admin(Method::GET, &format!("{path}/logs?limit=2"), None).await;
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    let first = lines[0]["id"].as_i64().unwrap();
    let after = api.admin(Method::GET, &format!("{path}/logs?after={first}"), None).await;
    assert_eq!(after[0]["id"], lines[1]["id"]);

    // Restart runs afresh (a new `since`), without counting a crash.
    let before = api.admin(Method::GET, &format!("{path}/status"), None).await;
    api.admin(Method::POST, &format!("{path}/restart"), None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = api.admin(Method::GET, &format!("{path}/status"), None).await;
        if now["state"] == "running" && now["since"] != before["since"] {
            assert_eq!(now["restarts"], 0, "{now}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no fresh run: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    support::produce_orders(&kafka, 3..5, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = api.admin(Method::GET, &format!("{path}/status"), None).await;
        if status["records_in"].as_i64() >= Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted app takes no orders: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop, and Start again.
    let stopped = api.admin(Method::POST, &format!("{path}/stop"), None).await;
    assert_eq!(stopped["desired_state"], "stopped");
    wait_for_state(&api, path, "stopped").await;
    api.admin(Method::POST, &format!("{path}/start"), None).await;
    wait_for_state(&api, path, "running").await;
    let titled = |stack: &DevStack| {
        stack
            .descendants()
            .into_iter()
            .filter(|(_, title)| {
                title.starts_with("aerogrid-connector") && title.contains("acme/logging")
            })
            .count()
    };
    assert_eq!(titled(&stack), 1);

    // Deleting the running app stops its connector and removes all it had.
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    let app_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM apps WHERE name = 'logging'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (status, _) = api.call(Method::DELETE, path, &api.admin, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while titled(&stack) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connector still runs: {:?}",
            stack.descendants()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for table in
        ["app_versions", "app_status", "app_logs", "app_leases", "app_grids", "app_checkpoints"]
    {
        let left: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE app_id = $1"))
                .bind(app_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(left, 0, "{table} keeps rows of the deleted app");
    }
    let (status, gone) = api.call(Method::GET, &format!("{path}/status"), &api.admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    // A new app of the same name starts empty.
    let body = json!({ "name": "logging", "code": LOGGING_APP });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(body)).await;
    let fresh = api.admin(Method::GET, &format!("{path}/status"), None).await;
    assert_eq!((fresh["state"].as_str(), fresh["records_in"].as_i64()), (Some("stopped"), Some(0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_the_docs_page_and_metrics_are_served() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_with_orders(&api).await;

    let (status, document) =
        api.call(Method::GET, "/api/v1/openapi.json", &Credentials::None, None).await;
    assert_eq!(status, StatusCode::OK);
    let start = &document["paths"]["/api/v1/teams/{team}/apps/{app}/start"]["post"];
    assert!(start["responses"]["422"].is_object(), "{start}");
    assert_eq!(
        start["responses"]["401"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    let page = api.client.get(format!("{}/api/v1/docs", api.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("/api/v1/teams/{team}/apps/{app}/versions/{version}/rollback"), "{page}");
    assert!(!page.contains("<script"), "the page needs no script");

    api.admin(Method::POST, "/api/v1/teams/acme/apps/orders/start", None).await;
    let metrics = api.client.get(format!("{}/metrics", api.base)).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = metrics.text().await.unwrap();
    for wanted in [
        "aerogrid_http_requests_total{method=\"POST\",route=\"/api/v1/teams/{team}/apps/{app}/start\",status=\"200\"} 1",
        "aerogrid_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/openapi.json\",status=\"200\",le=\"+Inf\"} 1",
        "# TYPE aerogrid_apps gauge",
        "aerogrid_records_in ",
        "aerogrid_bad_records ",
        "aerogrid_consumer_lag ",
        "aerogrid_grid_subscribers 0",
    ] {
        assert!(metrics.contains(wanted), "missing `{wanted}` in:\n{metrics}");
    }
}
