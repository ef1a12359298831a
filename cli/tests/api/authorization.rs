//! Who may do what: every route of the OpenAPI document × every kind of caller (anonymous,
//! each role, read and manage tokens, personal tokens, administrators), against the status and
//! the body each must get.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{
    DevStack,
    api::{Api, Credentials},
};

use super::control_plane::{PASSWORD, SEED};

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
