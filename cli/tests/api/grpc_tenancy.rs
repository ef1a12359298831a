//! Every gRPC method of the grid service answered to every kind of caller, over existing,
//! shared, hidden and missing grids: no answer tells a caller whether another team's app exists.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aerogrid_proto::v1::{ListGridsRequest, SubscribeRequest, subscribe_response};
use reqwest::Method;
use serde_json::json;
use support::{
    DevStack,
    api::{Api, Credentials},
};

use super::tenancy::{PASSWORD, SEED, acme_running, grid, grpc, open, with_credentials};

/// Every gRPC method with a rule; every caller kind; existing, shared, hidden and missing grids.
#[tokio::test(flavor = "multi_thread")]
async fn every_grpc_method_answers_each_caller_without_telling_what_exists() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    acme_running(&api, &stack).await;
    // A second grid of acme, not shared; a team of its own for a stranger.
    let two_grids = SEED
        .replace(
            "@app.stream(orders_topic)",
            "secret = app.Grid('secret', columns=['n'])\n\n@app.stream(orders_topic)",
        )
        .replace(
            "        product_sum[order.product] = { 'units_sold': units_sold }",
            "        product_sum[order.product] = { 'units_sold': units_sold }\n        secret[order_id] = {'n': 1}",
        );
    api.admin(Method::PUT, "/api/v1/teams/acme/apps/orders", Some(json!({ "code": two_grids })))
        .await;
    api.admin(Method::POST, "/api/v1/teams/acme/apps/orders/restart", None).await;
    let kafka = aerogrid_kafka::KafkaSettings::new(stack.file("broker"));
    for team in ["customer", "rival"] {
        api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": team }))).await;
    }
    for (user, team, role) in
        [("vi", "acme", "viewer"), ("cu", "customer", "viewer"), ("ri", "rival", "owner")]
    {
        api.create_user(user, PASSWORD).await;
        api.admin(
            Method::PUT,
            &format!("/api/v1/teams/{team}/members/{user}"),
            Some(json!({ "role": role })),
        )
        .await;
    }
    api.admin(
        Method::PUT,
        "/api/v1/teams/acme/apps/orders/grids/product_sum/shares/customer",
        None,
    )
    .await;
    // The service's methods are exactly those with a rule here.
    let descriptor =
        <descriptor::FileSet as prost::Message>::decode(aerogrid_proto::v1::FILE_DESCRIPTOR_SET)
            .unwrap();
    let mut methods: Vec<String> = descriptor
        .file
        .iter()
        .flat_map(|file| &file.service)
        .filter(|service| service.name == "GridService")
        .flat_map(|service| service.method.iter().map(|method| method.name.clone()))
        .collect();
    methods.sort();
    assert_eq!(methods, ["ListGrids", "Subscribe"], "every gRPC method has a rule in this test");

    let vi = api.sign_in("vi", PASSWORD).await;
    let callers = [
        ("admin", api.admin.clone()),
        ("viewer", vi.clone()),
        ("viewer's read token", api.token(&vi, "acme", "read").await),
        ("customer", api.sign_in("cu", PASSWORD).await),
        ("rival", api.sign_in("ri", PASSWORD).await),
        ("nobody", Credentials::None),
    ];
    // The new version runs (its status says version 2) once its second grid has rows.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.admin(Method::GET, "/api/v1/teams/acme/apps/orders/status", None).await;
        if status["state"] == "running" && status["version"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "version 2 never ran: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    support::produce_orders(&kafka, 10..13, 3).await;
    drop(open(&stack.url, &api.admin, grid("acme", "orders", "secret")).await);
    let cases = [
        ("shared grid", grid("acme", "orders", "product_sum")),
        ("unshared grid", grid("acme", "orders", "secret")),
        ("no such grid", grid("acme", "orders", "nope")),
        ("no such app", grid("acme", "nope", "product_sum")),
        ("no such team", grid("nope", "orders", "product_sum")),
    ];
    use tonic::Code::{NotFound, Ok as Allowed, Unauthenticated};
    let expected = |caller: &str, case: &str| match (caller, case) {
        ("nobody", _) => Unauthenticated,
        (_, "no such grid" | "no such app" | "no such team") => NotFound,
        ("admin" | "viewer" | "viewer's read token", _) => Allowed,
        ("customer", "shared grid") => Allowed,
        _ => NotFound,
    };
    let mut failures = Vec::new();
    let mut not_found = BTreeMap::new();
    let mut calls = 0;
    for (caller, credentials) in &callers {
        for (case, target) in &cases {
            calls += 1;
            let request = with_credentials(
                SubscribeRequest { grid: target.clone(), ..Default::default() },
                credentials,
            );
            let answer = grpc(&stack.url).await.subscribe(request).await;
            let (code, message) = match answer {
                Ok(mut stream) => {
                    let first = stream.get_mut().message().await.unwrap().unwrap();
                    assert!(matches!(first.event, Some(subscribe_response::Event::Snapshot(_))));
                    (Allowed, String::new())
                }
                Err(status) => (status.code(), status.message().to_owned()),
            };
            if code != expected(caller, case) {
                failures.push(format!("Subscribe {case} as {caller}: {code:?} {message}"));
            }
            if code == NotFound && *case != "no such grid" {
                not_found.insert(format!("{case} as {caller}"), message);
            }
        }
        // ListGrids lists only what the caller may read.
        calls += 1;
        let listed = grpc(&stack.url)
            .await
            .list_grids(with_credentials(ListGridsRequest::default(), credentials))
            .await;
        let listed: Vec<String> = match listed {
            Ok(answer) => answer
                .into_inner()
                .grids
                .into_iter()
                .map(|grid| {
                    let grid = grid.grid.unwrap();
                    format!("{}/{}/{}", grid.team, grid.app, grid.grid)
                })
                .collect(),
            Err(status) => vec![format!("{:?}", status.code())],
        };
        let want: Vec<&str> = match *caller {
            "nobody" => vec!["Unauthenticated"],
            "customer" => vec!["acme/orders/product_sum"],
            "rival" => vec![],
            _ => vec!["acme/orders/product_sum", "acme/orders/secret"],
        };
        if listed != want {
            failures.push(format!("ListGrids as {caller}: {listed:?}, expected {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // "Not yours" and "does not exist" are one answer.
    let messages: std::collections::BTreeSet<&String> = not_found.values().collect();
    assert_eq!(messages.len(), 1, "{not_found:#?}");
    // A customer asking for a grid the share does not cover learns nothing of the others.
    let request = with_credentials(
        SubscribeRequest { grid: grid("acme", "orders", "nope"), ..Default::default() },
        &callers[3].1,
    );
    let status = grpc(&stack.url).await.subscribe(request).await.unwrap_err();
    assert!(!status.message().contains("secret"), "{status:?}");
    println!(
        "gRPC matrix: {} methods x {} callers x {} cases = {calls} calls",
        methods.len(),
        callers.len(),
        cases.len()
    );
}

/// Just enough of `google.protobuf.FileDescriptorSet` to list a service's methods.
mod descriptor {
    #[derive(prost::Message)]
    pub(super) struct FileSet {
        #[prost(message, repeated, tag = "1")]
        pub(super) file: Vec<File>,
    }
    #[derive(prost::Message)]
    pub(super) struct File {
        #[prost(message, repeated, tag = "6")]
        pub(super) service: Vec<Service>,
    }
    #[derive(prost::Message)]
    pub(super) struct Service {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(message, repeated, tag = "2")]
        pub(super) method: Vec<Method>,
    }
    #[derive(prost::Message)]
    pub(super) struct Method {
        #[prost(string, tag = "1")]
        pub(super) name: String,
    }
}
