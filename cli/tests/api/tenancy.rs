//! Tenant isolation on a real `aerogrid dev`, tried as an attacker would: a team's apps read only
//! the topics granted to it (the backend refuses, and the runtime node refuses again when the
//! backend is bypassed), streams end within seconds once their access is withdrawn, gRPC answers
//! tell nobody whether another team's app exists, quotas hold, and no two connectors share a
//! user.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aerogrid_proto::v1::{
    GridRef, SubscribeRequest, grid_service_client::GridServiceClient, subscribe_response,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    DevStack,
    api::{Api, Credentials},
};

pub(super) const SEED: &str = include_str!("../../../connector/python/tests/seed.py");
pub(super) const PASSWORD: &str = "correct horse battery";
/// How soon a revocation must end a stream (the bound).
const REVOCATION_BOUND: Duration = Duration::from_secs(5);

/// The seed program reading `topic` instead of `orders`.
fn reading(topic: &str) -> String {
    SEED.replace("app.topic('orders'", &format!("app.topic('{topic}'"))
}

async fn wait_for_status(
    api: &Api,
    stack: &DevStack,
    team: &str,
    app: &str,
    wanted: &str,
) -> Value {
    let path = format!("/api/v1/teams/{team}/apps/{app}/status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.admin(Method::GET, &path, None).await;
        if status["state"] == wanted {
            return status;
        }
        if Instant::now() > deadline {
            let logs = api
                .admin(Method::GET, &format!("/api/v1/teams/{team}/apps/{app}/logs"), None)
                .await;
            panic!("{team}/{app} never {wanted}: {status}; its log: {logs}\n{}", stack.stderr());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn grpc(url: &str) -> GridServiceClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    GridServiceClient::new(channel)
}

pub(super) fn with_credentials<T>(message: T, credentials: &Credentials) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    match credentials {
        Credentials::None => {}
        Credentials::Token(token) => {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Credentials::Session { cookie, .. } => {
            request.metadata_mut().insert("cookie", cookie.parse().unwrap());
        }
    }
    request
}

pub(super) fn grid(team: &str, app: &str, grid: &str) -> Option<GridRef> {
    Some(GridRef { team: team.into(), app: app.into(), grid: grid.into() })
}

/// Opens a native subscription (waiting for the grid to be published); its first message must
/// be a snapshot.
pub(super) async fn open(
    url: &str,
    credentials: &Credentials,
    to: Option<GridRef>,
) -> tonic::Streaming<aerogrid_proto::v1::SubscribeResponse> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut client = grpc(url).await;
        let request = with_credentials(
            SubscribeRequest { grid: to.clone(), ..Default::default() },
            credentials,
        );
        match client.subscribe(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let first = stream.message().await.unwrap().unwrap();
                assert!(matches!(first.event, Some(subscribe_response::Event::Snapshot(_))));
                return stream;
            }
            Err(status) => {
                assert!(Instant::now() < deadline, "cannot subscribe to {to:?}: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The status `stream` ends with, and how long after `since` (just before the revocation).
async fn ended(
    stream: &mut tonic::Streaming<aerogrid_proto::v1::SubscribeResponse>,
    what: &str,
    since: Instant,
) -> (tonic::Status, Duration) {
    let started = since;
    let ending = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{what}: the stream ended without a status"),
                Err(status) => return status,
            }
        }
    };
    let status = tokio::time::timeout_at((since + REVOCATION_BOUND).into(), ending)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream still runs {REVOCATION_BOUND:?} later"));
    (status, started.elapsed())
}

/// A team `acme` (of the admin) whose seed app runs on 10 orders; returns the broker.
pub(super) async fn acme_running(api: &Api, stack: &DevStack) -> aerogrid_kafka::KafkaSettings {
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("orders", 1).await.unwrap();
    support::produce_orders(&kafka, 0..10, 3).await;
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let app = json!({ "name": "orders", "code": SEED });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(app)).await;
    api.admin(Method::POST, "/api/v1/teams/acme/apps/orders/start", None).await;
    wait_for_status(api, stack, "acme", "orders", "running").await;
    kafka
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_reads_only_its_topics_whoever_asks_and_however() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    acme_running(&api, &stack).await;
    let acme_app: uuid::Uuid = sqlx::query_scalar("SELECT id FROM apps WHERE name = 'orders'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let changelog = format!("aerogrid.changelog.{acme_app}");

    // Team `beta`, owned by `mallory`, who is no admin.
    api.create_user("mallory", PASSWORD).await;
    let mallory = api.sign_in("mallory", PASSWORD).await;
    let (status, _) =
        api.call(Method::POST, "/api/v1/teams", &mallory, Some(json!({ "name": "beta" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    // No team may be named so that its namespace holds another's, or the platform's.
    for name in ["acme.eu", "aerogrid"] {
        let (status, problem) =
            api.call(Method::POST, "/api/v1/teams", &mallory, Some(json!({ "name": name }))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {problem}");
    }
    // Nor may a new team's namespace take topics granted to another team, or topics that exist
    // (an administrator may create such a team on purpose).
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    kafka.ensure_topic("hr.salaries", 1).await.unwrap();
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/payments.*", None).await;
    for name in ["payments", "hr"] {
        let (status, problem) =
            api.call(Method::POST, "/api/v1/teams", &mallory, Some(json!({ "name": name }))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}: {problem}");
    }
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "hr" }))).await;
    // A user owns a bounded number of teams (10 by default; beta is the first).
    for index in 1..10 {
        let body = json!({ "name": format!("mine-{index}") });
        let (status, problem) = api.call(Method::POST, "/api/v1/teams", &mallory, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{problem}");
    }
    let (status, problem) =
        api.call(Method::POST, "/api/v1/teams", &mallory, Some(json!({ "name": "mine-10" }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // Every way of naming acme's data is an error on the `app.topic` line (9), for validation,
    // save and Start alike; a topic that does not exist reads exactly like one that does.
    let refused = |topic: &str| {
        format!("team `beta` may not read topic `{topic}`; an administrator can grant it")
    };
    let platform = |topic: &str| {
        format!("topic `{topic}` belongs to the platform: connectors can never read it")
    };
    let attempts = [
        ("orders", refused("orders"), true),
        ("acme.orders", refused("acme.orders"), true),
        ("no-such-topic", refused("no-such-topic"), true),
        (changelog.as_str(), platform(&changelog), false),
        ("__consumer_offsets", platform("__consumer_offsets"), false),
    ];
    for (index, (topic, message, grantable)) in attempts.iter().enumerate() {
        let code = reading(topic);
        let (_, validated) = api
            .call(
                Method::POST,
                "/api/v1/validate",
                &mallory,
                Some(json!({ "code": code, "team": "beta" })),
            )
            .await;
        let diagnostic = &validated["diagnostics"][0];
        assert_eq!(diagnostic["message"], message.as_str(), "{validated}");
        assert_eq!(
            (diagnostic["line"].as_u64(), diagnostic["severity"].as_str()),
            (Some(9), Some("error"))
        );
        assert_eq!(
            diagnostic["grantable_topic"].as_str(),
            grantable.then_some(*topic),
            "{diagnostic}"
        );
        let name = format!("try-{index}");
        let (status, created) = api
            .call(
                Method::POST,
                "/api/v1/teams/beta/apps",
                &mallory,
                Some(json!({ "name": name, "code": code })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["diagnostics"][0]["message"], message.as_str());
        let (status, problem) = api
            .call(Method::POST, &format!("/api/v1/teams/beta/apps/{name}/start"), &mallory, None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["diagnostics"][0]["message"], message.as_str(), "{problem}");
    }
    // Without a team, validation still refuses the platform's topics.
    let (_, validated) = api
        .call(
            Method::POST,
            "/api/v1/validate",
            &mallory,
            Some(json!({ "code": reading(&changelog) })),
        )
        .await;
    assert_eq!(validated["diagnostics"][0]["message"], platform(&changelog).as_str());

    // The backend bypassed (desired state set in the database): the node refuses the same
    // topics before it reads anything, and fails the apps with the same messages.
    for (index, (topic, message, _)) in attempts.iter().enumerate() {
        sqlx::query("UPDATE apps SET desired_state = 'running' WHERE name = $1")
            .bind(format!("try-{index}"))
            .execute(&pool)
            .await
            .unwrap();
        let status = wait_for_status(&api, &stack, "beta", &format!("try-{index}"), "failed").await;
        assert_eq!(status["error"], message.as_str(), "{topic}: {status}");
        assert_eq!(status["records_in"], 0, "{topic}: {status}");
    }
    // Nothing of acme's reached beta's grids.
    let grids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM app_grids JOIN apps ON apps.id = app_grids.app_id
         JOIN teams ON teams.id = apps.team_id WHERE teams.name = 'beta'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(grids, 0, "a refused app published no grid");

    // Grants: admins only; platform topics never; a grant lets the app run.
    let (status, _) =
        api.call(Method::PUT, "/api/v1/teams/beta/topics/orders", &mallory, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in ["aerogrid.*", "*", "__consumer_offsets"] {
        let (status, problem) = api
            .call(Method::PUT, &format!("/api/v1/teams/beta/topics/{bad}"), &api.admin, None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    api.admin(Method::PUT, "/api/v1/teams/beta/topics/orders", None).await;
    let (_, grants) = api.call(Method::GET, "/api/v1/teams/beta/topics", &mallory, None).await;
    assert_eq!(grants[0]["pattern"], "orders", "{grants}");
    assert_eq!(grants[0]["granted_by"], "admin", "{grants}");
    let (status, problem) =
        api.call(Method::POST, "/api/v1/teams/beta/apps/try-0/start", &mallory, None).await;
    assert_eq!(status, StatusCode::OK, "{problem}");
    wait_for_status(&api, &stack, "beta", "try-0", "running").await;
    let mut stream = open(&stack.url, &mallory, grid("beta", "try-0", "product_sum")).await;

    // Revoking the grant fails the app within seconds, with the reason, and ends its streams.
    let revoked_at = Instant::now();
    api.admin(Method::DELETE, "/api/v1/teams/beta/topics/orders", None).await;
    let (status, after) = ended(&mut stream, "the grant's revocation", revoked_at).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&refused("orders")), "{status:?}");
    let failed = wait_for_status(&api, &stack, "beta", "try-0", "failed").await;
    let app_stopped = revoked_at.elapsed();
    assert_eq!(failed["error"], refused("orders").as_str(), "{failed}");
    assert!(app_stopped < REVOCATION_BOUND, "the app failed {app_stopped:?} after the revocation");
    println!("grant revoked: stream ended after {after:?}, app failed after {app_stopped:?}");
    let audit = api.admin(Method::GET, "/api/v1/teams/beta/audit", None).await;
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().filter_map(|event| event["action"].as_str()).collect();
    assert_eq!(actions.first(), Some(&"topic.revoke"), "{actions:?}");
    assert!(actions.contains(&"topic.grant"), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_hold_and_connectors_do_not_share_a_user() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "beta" }))).await;
    let quotas = json!({ "quotas": { "apps": 3, "running_apps": 2, "app_memory_mib": 600, "total_memory_mib": 1024 } });
    let detail = api.admin(Method::PATCH, "/api/v1/teams/beta", Some(quotas)).await;
    assert_eq!(detail["quotas"]["apps"], 3, "{detail}");
    // A timer that says which user it runs as.
    let whoami = "import aerogrid, os\napp = aerogrid.App('who')\n@app.timer(seconds=0.2)\ndef say():\n    print('uid', os.getuid())\n";
    for name in ["one", "two", "three"] {
        api.admin(
            Method::POST,
            "/api/v1/teams/beta/apps",
            Some(json!({ "name": name, "code": whoami })),
        )
        .await;
    }
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/teams/beta/apps",
            &api.admin,
            Some(json!({ "name": "four", "code": whoami })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("3 apps, its quota"), "{problem}");

    // Memory beyond what one app may ask: 422, and nothing changed.
    let (status, problem) = api
        .call(
            Method::PATCH,
            "/api/v1/teams/beta/apps/one",
            &api.admin,
            Some(json!({ "memory_limit_mib": 700, "name": "renamed" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = api.call(Method::GET, "/api/v1/teams/beta/apps/one", &api.admin, None).await;
    assert_eq!(status, StatusCode::OK, "a refused change renames nothing");

    // Two may run; the third is refused, never half started.
    api.admin(Method::POST, "/api/v1/teams/beta/apps/one/start", None).await;
    api.admin(Method::POST, "/api/v1/teams/beta/apps/two/start", None).await;
    let (status, problem) =
        api.call(Method::POST, "/api/v1/teams/beta/apps/three/start", &api.admin, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("runs 2 apps, its quota"), "{problem}");
    let three = api.admin(Method::GET, "/api/v1/teams/beta/apps/three", None).await;
    assert_eq!(three["desired_state"], "stopped");
    let team = api.admin(Method::GET, "/api/v1/teams/beta", None).await;
    assert_eq!(team["usage"]["running_apps"], 2, "{team}");
    // A running app's memory cannot grow past the team's total either (its next restart would
    // take it): 512 + 600 > 1024.
    let (status, problem) = api
        .call(
            Method::PATCH,
            "/api/v1/teams/beta/apps/two",
            &api.admin,
            Some(json!({ "memory_limit_mib": 600 })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let two = api.admin(Method::GET, "/api/v1/teams/beta/apps/two", None).await;
    assert_eq!(two["memory_limit_mib"], Value::Null, "{two}");

    // Each connector runs as a user of its own (the node runs as root here).
    wait_for_status(&api, &stack, "beta", "one", "running").await;
    wait_for_status(&api, &stack, "beta", "two", "running").await;
    let mut uids = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while uids.len() < 2 {
        assert!(Instant::now() < deadline, "the apps did not say who they are: {uids:?}");
        for app in ["one", "two"] {
            let logs =
                api.admin(Method::GET, &format!("/api/v1/teams/beta/apps/{app}/logs"), None).await;
            if let Some(line) = logs.as_array().unwrap().iter().find_map(|line| {
                line["message"]
                    .as_str()
                    .and_then(|text| text.strip_prefix("uid "))
                    .map(str::to_owned)
            }) {
                uids.insert(app, line.parse::<u32>().unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(uids["one"], uids["two"], "two apps share a user: {uids:?}");
    assert!(uids.values().all(|uid| *uid >= 1_879_048_192), "{uids:?}");

    // The node caps memory whatever the database says (its maximum is 4096 MiB).
    api.admin(Method::POST, "/api/v1/teams/beta/apps/two/stop", None).await;
    sqlx::query("UPDATE apps SET memory_limit_mib = 60000 WHERE name = 'three'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE apps SET desired_state = 'running' WHERE name = 'three'")
        .execute(&pool)
        .await
        .unwrap();
    let failed = wait_for_status(&api, &stack, "beta", "three", "failed").await;
    assert_eq!(
        failed["error"],
        "the app asks for 60000 MiB of memory; a connector on this node may have at most 4096 MiB",
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_end_within_seconds_once_their_access_is_withdrawn() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_running(&api, &stack).await;
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "customer" }))).await;
    for (user, team, role) in
        [("ed", "acme", "editor"), ("vi", "acme", "viewer"), ("cu", "customer", "viewer")]
    {
        api.create_user(user, PASSWORD).await;
        let path = format!("/api/v1/teams/{team}/members/{user}");
        api.admin(Method::PUT, &path, Some(json!({ "role": role }))).await;
    }
    let share = "/api/v1/teams/acme/apps/orders/grids/product_sum/shares/customer";
    api.admin(Method::PUT, share, None).await;
    let product_sum = || grid("acme", "orders", "product_sum");
    let mut timings = Vec::new();

    // A token revoked: UNAUTHENTICATED.
    let ed = api.sign_in("ed", PASSWORD).await;
    let token = api.token(&ed, "acme", "read").await;
    let mut stream = open(&stack.url, &token, product_sum()).await;
    let (_, tokens) = api.call(Method::GET, "/api/v1/me/tokens", &ed, None).await;
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    let at = Instant::now();
    api.call(Method::DELETE, &format!("/api/v1/me/tokens/{id}"), &ed, None).await;
    let (status, after) = ended(&mut stream, "a revoked token", at).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    timings.push(("token revoked (gRPC)", after));

    // A session ended (signed out): UNAUTHENTICATED.
    let session = api.sign_in("vi", PASSWORD).await;
    let mut stream = open(&stack.url, &session, product_sum()).await;
    let Credentials::Session { cookie, .. } = &session else { unreachable!() };
    let at = Instant::now();
    api.client
        .post(format!("{}/api/v1/auth/sign-out", stack.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let (status, after) = ended(&mut stream, "a session signed out", at).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    timings.push(("session ended (gRPC)", after));

    // The share withdrawn: PERMISSION_DENIED for the customer's member.
    let cu = api.sign_in("cu", PASSWORD).await;
    let mut stream = open(&stack.url, &cu, product_sum()).await;
    let at = Instant::now();
    api.admin(Method::DELETE, share, None).await;
    let (status, after) = ended(&mut stream, "a share withdrawn", at).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("withdrawn"), "{status:?}");
    timings.push(("share withdrawn (gRPC)", after));

    // A member removed, over gRPC-web (HTTP/1.1, as the page and Excel use it), and over SSE.
    let ed_token = api.token(&ed, "acme", "read").await;
    let Credentials::Token(secret) = &ed_token else { unreachable!() };
    let mut web = grpc_web_subscribe(&stack.url, secret).await;
    let follow = api
        .request(Method::GET, "/api/v1/teams/acme/apps/orders/logs/follow", &ed_token)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::OK);
    let mut events = follow.bytes_stream();
    let removed_at = Instant::now();
    api.admin(Method::DELETE, "/api/v1/teams/acme/members/ed", None).await;
    let web_status = grpc_web_end(&mut web).await;
    timings.push(("member removed (gRPC-web)", removed_at.elapsed()));
    assert_eq!(web_status, "16", "UNAUTHENTICATED: the removal revoked the member's tokens");
    let mut text = String::new();
    let sse_deadline = removed_at + REVOCATION_BOUND;
    while !text.contains("event: end") {
        let chunk =
            tokio::time::timeout_at(sse_deadline.into(), futures::StreamExt::next(&mut events))
                .await
                .unwrap_or_else(|_| panic!("the followed log still runs: {text}"));
        match chunk {
            Some(Ok(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the followed log ended without its `end` event: {other:?} {text}"),
        }
    }
    timings.push(("member removed (SSE)", removed_at.elapsed()));
    assert!(text.contains("access to this log was withdrawn"), "{text}");
    for (what, after) in &timings {
        assert!(*after < REVOCATION_BOUND, "{what}: {after:?}");
    }
    println!("streams ended after: {timings:?}");
}

/// A gRPC-web subscription to `acme/orders/product_sum` over HTTP/1.1; its snapshot read.
async fn grpc_web_subscribe(url: &str, token: &str) -> reqwest::Response {
    let mut response = support::http()
        .post(format!("{url}/aerogrid.v1.GridService/Subscribe"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {token}"))
        .body(support::grpc_web_subscribe_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first[0], 0, "a data frame (the snapshot) comes first");
    response
}

/// The `grpc-status` of the trailers a gRPC-web stream ends with, within the bound.
async fn grpc_web_end(response: &mut reqwest::Response) -> String {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + REVOCATION_BOUND;
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(at) = text.find("grpc-status:") {
            return text[at + 12..].trim_start().chars().take_while(char::is_ascii_digit).collect();
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the gRPC-web stream still runs")
            .unwrap()
            .expect("trailers before the end");
        received.extend_from_slice(&chunk);
    }
}
