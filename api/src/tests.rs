use std::str::FromStr;

use super::*;

#[test]
fn words_are_their_json_and_parse_back() {
    for state in AppState::ALL {
        let json = serde_json::to_string(state).unwrap();
        assert_eq!(json, format!("\"{}\"", state.as_str()));
        assert_eq!(AppState::from_str(state.as_str()), Ok(*state));
    }
    assert_eq!(
        Role::ALL.iter().map(|role| role.as_str()).collect::<Vec<_>>(),
        ["viewer", "editor", "owner"]
    );
    assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Owner);
    assert_eq!(Scope::default(), Scope::Manage);
    let unknown = AppState::from_str("runing").unwrap_err();
    assert_eq!(unknown.to_string(), "`runing` is not a known app state");
}

#[test]
fn request_bodies_refuse_unknown_fields() {
    // The misspelling the conflict check must not miss.
    let error = serde_json::from_str::<SaveApp>(r#"{"code": "", "base_verison": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `base_verison`"), "{error}");
    let saved: SaveApp = serde_json::from_str(r#"{"code": "x", "base_version": 3}"#).unwrap();
    assert_eq!(saved.base_version, Some(3));
    assert!(serde_json::from_str::<NewToken>(r#"{"name": "n", "scope": "admin"}"#).is_err());
    let token: NewToken = serde_json::from_str(r#"{"name": "n"}"#).unwrap();
    assert_eq!(token.scope, Scope::Manage);
    assert!(serde_json::from_str::<ChangeTeam>(r#"{"quotas": {"appz": 1}}"#).is_err());
}

#[test]
fn answers_read_with_fields_a_newer_server_added() {
    let me: Me = serde_json::from_str(
        r#"{"id": "00000000-0000-0000-0000-000000000001", "name": "ada", "is_admin": false, "theme": "dark"}"#,
    )
    .unwrap();
    assert_eq!(me.name, "ada");
    assert_eq!(me.csrf_token, None);
}

#[test]
fn a_team_detail_is_the_team_flattened_with_its_quotas() {
    let detail = TeamDetail {
        team: Team {
            id: uuid::Uuid::nil(),
            name: "sales".into(),
            role: Role::Owner,
            created_at: chrono::DateTime::UNIX_EPOCH,
        },
        namespace: "sales.*".into(),
        quotas: Quotas { apps: 1, running_apps: 1, app_memory_mib: 512, total_memory_mib: 1024 },
        usage: Usage { apps: 0, running_apps: 0, memory_mib: 0 },
    };
    let json = serde_json::to_value(&detail).unwrap();
    assert_eq!(json["name"], "sales");
    assert_eq!(json["role"], "owner");
    assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
    assert_eq!(serde_json::from_value::<TeamDetail>(json).unwrap(), detail);
}
