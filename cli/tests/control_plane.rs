//! The control plane through its REST API on a real `aerogrid dev`: who may do what (every
//! route of the OpenAPI document × every kind of caller), versions and conflicts, sessions,
//! validation, and an app's whole lifecycle.

mod support;

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{
    DevStack,
    api::{Api, Credentials},
};

const SEED: &str = include_str!("../../connector/python/tests/seed.py");
const PASSWORD: &str = "correct horse battery";

/// What a route asks of its caller.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in caller.
    SignedIn,
    /// Administrators only.
    Admin,
    /// The caller's own account: a session or a personal token, never a team's token.
    Personal,
    /// Revoking a token of the caller's own (one the admin `boss` minted).
    RevokeOwnToken,
    /// Members of the route's team with at least this role (`read`, `edit`, `own`).
    Team(Need),
    /// Revoking someone else's token: owners only; others do not see it.
    RevokeOthersToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Read,
    Edit,
    Own,
}

/// Every operation of the API: its rule and the status it answers when allowed. A route missing
/// here (or listed here but not served) fails the test.
fn route_table() -> BTreeMap<&'static str, (Rule, u16)> {
    use Need::*;
    use Rule::*;
    BTreeMap::from([
        ("GET /api/v1/me", (SignedIn, 200)),
        ("PUT /api/v1/me/password", (Personal, 204)),
        ("GET /api/v1/me/tokens", (Personal, 200)),
        ("DELETE /api/v1/me/tokens/{id}", (RevokeOwnToken, 204)),
        ("POST /api/v1/auth/sign-in", (Public, 200)),
        ("POST /api/v1/auth/sign-out", (Public, 204)),
        ("POST /api/v1/users", (Admin, 201)),
        ("POST /api/v1/validate", (SignedIn, 200)),
        ("GET /api/v1/teams", (SignedIn, 200)),
        ("POST /api/v1/teams", (SignedIn, 201)),
        ("GET /api/v1/teams/{team}", (Team(Read), 200)),
        ("PATCH /api/v1/teams/{team}", (Admin, 200)),
        ("GET /api/v1/teams/{team}/topics", (Team(Read), 200)),
        ("PUT /api/v1/teams/{team}/topics/{pattern}", (Admin, 200)),
        ("DELETE /api/v1/teams/{team}/topics/{pattern}", (Admin, 204)),
        ("GET /api/v1/teams/{team}/members", (Team(Read), 200)),
        ("PUT /api/v1/teams/{team}/members/{user}", (Team(Own), 200)),
        ("DELETE /api/v1/teams/{team}/members/{user}", (Team(Own), 204)),
        ("GET /api/v1/teams/{team}/tokens", (Team(Read), 200)),
        ("POST /api/v1/teams/{team}/tokens", (Team(Read), 201)),
        ("DELETE /api/v1/teams/{team}/tokens/{id}", (RevokeOthersToken, 204)),
        ("GET /api/v1/teams/{team}/shared-grids", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/audit", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps", (Team(Read), 200)),
        ("POST /api/v1/teams/{team}/apps", (Team(Edit), 201)),
        ("GET /api/v1/teams/{team}/apps/{app}", (Team(Read), 200)),
        ("PUT /api/v1/teams/{team}/apps/{app}", (Team(Edit), 200)),
        ("PATCH /api/v1/teams/{team}/apps/{app}", (Team(Edit), 200)),
        ("DELETE /api/v1/teams/{team}/apps/{app}", (Team(Edit), 204)),
        ("POST /api/v1/teams/{team}/apps/{app}/start", (Team(Edit), 200)),
        ("POST /api/v1/teams/{team}/apps/{app}/stop", (Team(Edit), 200)),
        ("POST /api/v1/teams/{team}/apps/{app}/restart", (Team(Edit), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/status", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/logs", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/logs/follow", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/bad-records", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/versions", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/versions/{version}", (Team(Read), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/versions/{version}/diff", (Team(Read), 200)),
        ("POST /api/v1/teams/{team}/apps/{app}/versions/{version}/rollback", (Team(Edit), 200)),
        ("GET /api/v1/teams/{team}/apps/{app}/shares", (Team(Read), 200)),
        ("PUT /api/v1/teams/{team}/apps/{app}/grids/{grid}/shares/{with}", (Team(Own), 200)),
        ("DELETE /api/v1/teams/{team}/apps/{app}/grids/{grid}/shares/{with}", (Team(Own), 204)),
    ])
}

/// The kinds of caller, as seen from team `acme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Owner,
    Editor,
    Viewer,
    /// The owner's read-only token of `acme`.
    Reader,
    /// The owner's `manage` token of `acme`: the owner's role, in that team only.
    Manager,
    /// An administrator who is no member of `acme` (signed in).
    Admin,
    /// A member of a team `acme` shares a grid with.
    Shared,
    /// A member of an unrelated team.
    Other,
    /// A `manage` token of the unrelated team.
    OtherToken,
    Nobody,
}

const EVERYONE: [Who; 10] = [
    Who::Owner,
    Who::Editor,
    Who::Viewer,
    Who::Reader,
    Who::Manager,
    Who::Admin,
    Who::Shared,
    Who::Other,
    Who::OtherToken,
    Who::Nobody,
];

fn expected(rule: Rule, ok: u16, who: Who) -> u16 {
    if who == Who::Nobody {
        return if matches!(rule, Rule::Public) { ok } else { 401 };
    }
    let team_token = matches!(who, Who::Reader | Who::Manager | Who::OtherToken);
    match rule {
        Rule::Public | Rule::SignedIn => ok,
        Rule::Personal => {
            if team_token {
                403
            } else {
                ok
            }
        }
        Rule::Admin => {
            if who == Who::Admin {
                ok
            } else {
                403
            }
        }
        Rule::Team(need) => {
            let role = match who {
                Who::Owner | Who::Manager | Who::Admin => Need::Own,
                Who::Editor => Need::Edit,
                Who::Viewer | Who::Reader => Need::Read,
                Who::Shared | Who::Other | Who::OtherToken | Who::Nobody => return 404,
            };
            if role >= need { ok } else { 403 }
        }
        Rule::RevokeOthersToken => match who {
            Who::Owner | Who::Manager | Who::Admin => ok,
            Who::Reader => 403,
            _ => 404,
        },
        Rule::RevokeOwnToken => match who {
            Who::Admin => ok,
            _ if team_token => 403,
            _ => 404,
        },
    }
}

/// Team tokens cannot make teams, nor tokens (a leaked one must not mint its successors).
fn expected_for(rule: Rule, ok: u16, who: Who, route: &str) -> u16 {
    let team_token = matches!(who, Who::Reader | Who::Manager | Who::OtherToken);
    if route == "POST /api/v1/teams" && team_token {
        return 403;
    }
    if route == "POST /api/v1/teams/{team}/tokens" && matches!(who, Who::Reader | Who::Manager) {
        return 403;
    }
    expected(rule, ok, who)
}

/// What an allowed call's answer may hold for this caller: nothing of a team they are not in.
fn body_problem(route: &str, who: Who, body: &Value) -> Option<String> {
    let names = |key: &str| -> Vec<String> {
        body.as_array()
            .map(|items| {
                items.iter().filter_map(|item| item[key].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default()
    };
    let (teams_seen, own_name) = match who {
        Who::Owner | Who::Reader | Who::Manager => (vec!["acme"], Some("owner")),
        Who::Editor => (vec!["acme"], Some("editor")),
        Who::Viewer => (vec!["acme"], Some("viewer")),
        Who::Admin => (vec!["acme", "customer", "rival"], Some("boss")),
        Who::Shared => (vec!["customer"], Some("shared")),
        Who::Other | Who::OtherToken => (vec!["rival"], Some("other")),
        Who::Nobody => (vec![], None),
    };
    let base_teams = ["acme", "customer", "rival"];
    match route {
        "GET /api/v1/teams" => {
            let listed = names("name");
            for team in base_teams {
                let may = teams_seen.contains(&team);
                if listed.iter().any(|name| name == team) != may {
                    return Some(format!("teams {listed:?}: `{team}` should be listed: {may}"));
                }
            }
            if matches!(who, Who::Reader | Who::Manager | Who::OtherToken) && listed.len() != 1 {
                return Some(format!("a team's token lists its team only: {listed:?}"));
            }
        }
        "GET /api/v1/teams/{team}/tokens" => {
            let users = names("user");
            let sees_all = matches!(who, Who::Owner | Who::Reader | Who::Manager | Who::Admin);
            if !sees_all && users.iter().any(|user| Some(user.as_str()) != own_name) {
                return Some(format!("tokens of others listed: {users:?}"));
            }
            if sees_all && !users.iter().any(|user| user == "owner") {
                return Some(format!("the owner's tokens are missing: {users:?}"));
            }
        }
        "GET /api/v1/me/tokens" => {
            for item in body.as_array().into_iter().flatten() {
                let team = item["team"].as_str();
                if team
                    .is_some_and(|team| base_teams.contains(&team) && !teams_seen.contains(&team))
                {
                    return Some(format!("a token of another team: {item}"));
                }
            }
            if who == Who::Owner && names("name").len() < 2 {
                return Some(format!("the owner's two tokens are missing: {body}"));
            }
        }
        "GET /api/v1/teams/{team}/members" => {
            let users = names("user");
            if ["owner", "editor", "viewer"].iter().any(|user| !users.iter().any(|u| u == user))
                || users.iter().any(|user| user == "shared" || user == "other")
            {
                return Some(format!("acme's members: {users:?}"));
            }
        }
        "GET /api/v1/teams/{team}/topics"
            if !names("pattern").iter().any(|pattern| pattern == "orders") =>
        {
            return Some(format!("acme's grants: {body}"));
        }
        "GET /api/v1/teams/{team}"
            if body["name"] != "acme"
                || body["namespace"] != "acme.*"
                || !body["quotas"].is_object() =>
        {
            return Some(format!("acme: {body}"));
        }
        "GET /api/v1/teams/{team}/shared-grids"
            if body.as_array().is_none_or(|grids| !grids.is_empty()) =>
        {
            return Some(format!("nothing is shared with acme: {body}"));
        }
        "GET /api/v1/teams/{team}/audit" => {
            let targets = names("target");
            if targets.iter().any(|target| target == "rival" || target == "customer") {
                return Some(format!("another team's audit events: {targets:?}"));
            }
        }
        _ => {}
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_or_allows_each_kind_of_caller() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);

    // The document lists exactly the routes of the table.
    let (status, document) =
        api.call(Method::GET, "/api/v1/openapi.json", &Credentials::None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let mut served = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                served.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let table = route_table();
    let listed: Vec<String> = table.keys().map(|key| key.to_string()).collect();
    served.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(served, listed_sorted, "every served route has a rule here, and only those");

    // Team `acme` with an owner, an editor and a viewer; `customer`, which `acme` shares a
    // grid with; `rival`, unrelated.
    for user in ["owner", "editor", "viewer", "shared", "other", "spare", "signin", "boss"] {
        api.create_user(user, PASSWORD).await;
    }
    // A second administrator, who is in no team (`admin` owns the teams it makes).
    let pool = sqlx::PgPool::connect(&stack.file("database-url")).await.unwrap();
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE name = 'boss'")
        .execute(&pool)
        .await
        .unwrap();
    for team in ["acme", "customer", "rival"] {
        api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": team }))).await;
    }
    for (team, user, role) in [
        ("acme", "owner", "owner"),
        ("acme", "editor", "editor"),
        ("acme", "viewer", "viewer"),
        ("customer", "shared", "viewer"),
        ("rival", "other", "owner"),
    ] {
        let path = format!("/api/v1/teams/{team}/members/{user}");
        api.admin(Method::PUT, &path, Some(json!({ "role": role }))).await;
    }
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let app = json!({ "name": "orders", "code": SEED });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(app)).await;
    api.admin(
        Method::PUT,
        "/api/v1/teams/acme/apps/orders/grids/product_sum/shares/customer",
        None,
    )
    .await;
    let boss = api.sign_in("boss", PASSWORD).await;

    let mut callers = Vec::new();
    for who in EVERYONE {
        let credentials = match who {
            Who::Owner => api.sign_in("owner", PASSWORD).await,
            Who::Editor => api.sign_in("editor", PASSWORD).await,
            Who::Viewer => api.sign_in("viewer", PASSWORD).await,
            Who::Reader => {
                let owner = api.sign_in("owner", PASSWORD).await;
                api.token(&owner, "acme", "read").await
            }
            Who::Manager => {
                let owner = api.sign_in("owner", PASSWORD).await;
                api.token(&owner, "acme", "manage").await
            }
            Who::Admin => boss.clone(),
            Who::Shared => api.sign_in("shared", PASSWORD).await,
            Who::Other => api.sign_in("other", PASSWORD).await,
            Who::OtherToken => {
                let other = api.sign_in("other", PASSWORD).await;
                api.token(&other, "rival", "manage").await
            }
            Who::Nobody => Credentials::None,
        };
        callers.push((who, credentials));
    }

    // Signing out ends the callers' sessions: it goes last.
    let mut routes: Vec<&str> = table.keys().copied().collect();
    routes.sort_by_key(|route| route.contains("sign-out"));
    let mut unique = 0;
    let mut checked_bodies = 0;
    let mut failures = Vec::new();
    for route in routes {
        let (rule, ok) = table[route];
        let (method, template) = route.split_once(' ').unwrap();
        let method: Method = method.parse().unwrap();
        for (who, credentials) in &callers {
            unique += 1;
            let mut params = BTreeMap::from([
                ("team", "acme".to_owned()),
                ("app", "orders".to_owned()),
                ("user", "spare".to_owned()),
                ("version", "1".to_owned()),
                ("grid", "product_sum".to_owned()),
                ("with", "customer".to_owned()),
                ("pattern", "extra.*".to_owned()),
            ]);
            // What the request acts on exists before it, whoever sends it.
            match route {
                "DELETE /api/v1/teams/{team}/apps/{app}" => {
                    let name = format!("doomed-{unique}");
                    let body = json!({ "name": name, "code": SEED });
                    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(body)).await;
                    params.insert("app", name);
                }
                "DELETE /api/v1/teams/{team}/members/{user}" => {
                    let body = json!({ "role": "viewer" });
                    api.admin(Method::PUT, "/api/v1/teams/acme/members/spare", Some(body)).await;
                }
                "DELETE /api/v1/teams/{team}/tokens/{id}" => {
                    let body = json!({ "name": "admin's", "scope": "read" });
                    let token =
                        api.admin(Method::POST, "/api/v1/teams/acme/tokens", Some(body)).await;
                    params.insert("id", token["id"].as_str().unwrap().to_owned());
                }
                "DELETE /api/v1/teams/{team}/apps/{app}/grids/{grid}/shares/{with}" => {
                    let path = "/api/v1/teams/acme/apps/orders/grids/product_sum/shares/customer";
                    api.admin(Method::PUT, path, None).await;
                }
                "DELETE /api/v1/teams/{team}/topics/{pattern}" => {
                    api.admin(Method::PUT, "/api/v1/teams/acme/topics/extra.*", None).await;
                }
                "DELETE /api/v1/me/tokens/{id}" => {
                    let body = json!({ "name": "boss's", "scope": "read" });
                    let (_, token) = api
                        .call(Method::POST, "/api/v1/teams/acme/tokens", &boss, Some(body))
                        .await;
                    params.insert("id", token["id"].as_str().unwrap().to_owned());
                }
                _ => {}
            }
            let body = match route {
                "PUT /api/v1/me/password" => {
                    Some(json!({ "current_password": PASSWORD, "new_password": PASSWORD }))
                }
                "POST /api/v1/auth/sign-in" => {
                    Some(json!({ "name": "signin", "password": PASSWORD }))
                }
                "POST /api/v1/users" => {
                    Some(json!({ "name": format!("user-{unique}"), "password": PASSWORD }))
                }
                "POST /api/v1/validate" => Some(json!({ "code": SEED })),
                "POST /api/v1/teams" => Some(json!({ "name": format!("team-{unique}") })),
                "PUT /api/v1/teams/{team}/members/{user}" => Some(json!({ "role": "viewer" })),
                "POST /api/v1/teams/{team}/tokens" => Some(json!({ "name": "t", "scope": "read" })),
                "POST /api/v1/teams/{team}/apps" => {
                    Some(json!({ "name": format!("made-{unique}"), "code": SEED }))
                }
                "PUT /api/v1/teams/{team}/apps/{app}" => Some(json!({ "code": SEED })),
                "PATCH /api/v1/teams/{team}/apps/{app}" => Some(json!({ "memory_limit_mib": 256 })),
                "PATCH /api/v1/teams/{team}" => Some(json!({ "quotas": { "apps": 1000 } })),
                _ => None,
            };
            let mut path = template.to_owned();
            for (name, value) in &params {
                path = path.replace(&format!("{{{name}}}"), value);
            }
            let want = expected_for(rule, ok, *who, route);
            let mut request = api.request(method.clone(), &path, credentials);
            if let Some(body) = body {
                request = request.json(&body);
            }
            // A followed log never ends: the status line is the answer.
            let response = tokio::time::timeout(Duration::from_secs(30), request.send())
                .await
                .unwrap_or_else(|_| panic!("{route} as {who:?} did not answer"))
                .unwrap();
            let status = response.status().as_u16();
            if status == want
                && status < 300
                && method == Method::GET
                && !route.ends_with("/follow")
            {
                let body: Value = response.json().await.unwrap_or_default();
                if let Some(problem) = body_problem(route, *who, &body) {
                    failures.push(format!("{route} as {who:?}: {problem}"));
                }
                checked_bodies += 1;
                continue;
            }
            if status != want {
                let text = if route.ends_with("/follow") && status == 200 {
                    String::new()
                } else {
                    response.text().await.unwrap_or_default()
                };
                failures.push(format!("{route} as {who:?}: {status}, expected {want}: {text}"));
            } else if status >= 400 {
                assert_eq!(
                    response.headers()[header::CONTENT_TYPE],
                    "application/problem+json",
                    "{route} as {who:?}"
                );
                let problem: Value = response.json().await.unwrap();
                let detail = problem["detail"].as_str().unwrap_or_default();
                assert!(!detail.is_empty(), "{route} as {who:?}: a problem says why: {problem}");
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    println!(
        "REST matrix: {} routes x {} callers = {unique} calls, {checked_bodies} allowed answers' bodies checked",
        table.len(),
        EVERYONE.len()
    );
}

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
    let snapshot = std::process::Command::new(env!("CARGO_BIN_EXE_aerogrid"))
        .args(["snapshot", "acme/orders/product_sum", "--url", &stack.url, "--token", secret])
        .output()
        .unwrap();
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
