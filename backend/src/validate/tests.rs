use super::*;

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");

fn messages(code: &str) -> Vec<(u32, u32, Severity, String)> {
    scoped(code, None)
}

fn scoped(code: &str, scope: Option<&TopicScope>) -> Vec<(u32, u32, Severity, String)> {
    validate_now(code, scope, &Default::default())
        .into_iter()
        .map(|d| (d.line, d.column, d.severity, d.message))
        .collect()
}

#[test]
fn the_seed_program_is_clean() {
    assert_eq!(messages(SEED), vec![]);
}

#[test]
fn the_ide_templates_are_clean() {
    // The IDE's templates (besides the seed) are raw strings in its source.
    let source = include_str!("../../../frontend/src/templates.rs");
    let templates: Vec<&str> =
        source.split("code: r#\"").skip(1).map(|rest| rest.split("\"#,").next().unwrap()).collect();
    assert_eq!(templates.len(), 3);
    for template in templates {
        assert_eq!(messages(template), vec![], "{template}");
    }
}

#[test]
fn a_syntax_error_has_its_line_and_column() {
    let code = "import aerogrid\napp = aerogrid.App('a')\nx = (1 +\ndef f(:\n    pass\n";
    let found = messages(code);
    assert_eq!(found.len(), 1, "{found:?}");
    let (line, column, severity, message) = &found[0];
    assert_eq!((*line, *severity), (4, Severity::Error), "{message}");
    assert!(*column >= 1 && message.starts_with("SyntaxError: "), "{message}");
}

#[test]
fn exactly_one_app() {
    let none = messages("import aerogrid\n");
    assert_eq!(none.len(), 1);
    assert!(none[0].3.contains("creates no app"), "{none:?}");
    let two = messages("import aerogrid\na = aerogrid.App('a')\nb = aerogrid.App('b')\n");
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!((two[0].0, two[0].1), (3, 5));
    assert!(two[0].3.contains("first is on line 2"), "{two:?}");
    let imported = messages("from aerogrid import App as A\napp = A('a')\n");
    assert_eq!(imported, vec![]);
}

#[test]
fn streams_read_declared_topics() {
    let code = "import aerogrid\napp = aerogrid.App('a')\nt = app.topic('orders')\n\
                @app.stream('orders')\nasync def f(s): pass\n\
                @app.stream(nothing)\nasync def g(s): pass\n\
                @app.stream(t, app.topic('more'))\nasync def h(s): pass\n\
                @app.stream\nasync def i(s): pass\n";
    let found = messages(code);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (4, 13));
    assert!(found[0].3.contains("orders_topic = app.topic('orders'"), "{found:?}");
    assert_eq!(found[1].0, 6);
    assert!(found[1].3.contains("`nothing` is not a topic"), "{found:?}");
    assert_eq!(found[2].0, 10);
}

#[test]
fn unknown_aerogrid_names() {
    let code = "import aerogrid as ag\nfrom aerogrid import Recrod\napp = ag.App('a')\n\
                g = ag.grid('x')\napp.table('t')\nx = app.Grid('g', columns=['a'])\n";
    let found = messages(code);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].3.contains("no `Recrod`"), "{found:?}");
    assert!(found[1].3.contains("no `grid` (did you mean `Grid`?)"), "{found:?}");
    assert_eq!((found[2].0, found[2].1), (5, 1));
    assert!(found[2].3.contains("the app has no `table`; it has Grid, "), "{found:?}");
}

#[test]
fn imports_the_sandbox_refuses() {
    let code = "import aerogrid\napp = aerogrid.App('a')\nimport ctypes.util\n\
                import requests\nimport socket, json\nfrom urllib import request\n\
                from collections import deque\n";
    let found = messages(code);
    let summary: Vec<(u32, Severity)> = found.iter().map(|d| (d.0, d.2)).collect();
    assert_eq!(
        summary,
        vec![
            (3, Severity::Error),
            (4, Severity::Error),
            (5, Severity::Warning),
            (6, Severity::Warning)
        ],
        "{found:?}"
    );
    assert!(found[0].3.contains("native code"), "{found:?}");
    assert!(
        found[1].3.contains("`requests` is not in the standard library or a declared package: add `requests` to the app's requirements"),
        "{found:?}"
    );
    assert!(found[2].3.contains("network access"), "{found:?}");
    assert!(found[3].3.contains("`urllib.request`"), "{found:?}");
}

#[test]
fn topics_the_team_may_not_read_are_errors_on_their_line() {
    let scope = TopicScope { team: "demo".into(), grants: vec!["sales.*".into()] };
    let code = "import aerogrid\napp = aerogrid.App('a')\n\
                a = app.topic('demo.orders')\nb = app.topic('sales.eu', value_type=dict)\n\
                c = app.topic('orders')\nd = app.topic(name='aerogrid.changelog.x')\n\
                e = app.topic('ord' + 'ers')\n";
    let found = validate_now(code, Some(&scope), &Default::default());
    let summary: Vec<(u32, Severity, &str)> =
        found.iter().map(|d| (d.line, d.severity, d.message.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (
                5,
                Severity::Error,
                "team `demo` may not read topic `orders`; an administrator can grant it"
            ),
            (
                6,
                Severity::Error,
                "topic `aerogrid.changelog.x` belongs to the platform: connectors can never read it"
            ),
            (
                7,
                Severity::Warning,
                "the topic's name is not a string literal: whether the team may read it is checked when the app starts"
            ),
        ],
        "{found:?}"
    );
    assert_eq!(found[0].grantable_topic.as_deref(), Some("orders"));
    assert_eq!(found[1].grantable_topic, None);
    // Without a team, only the platform's topics are refused.
    let unscoped = messages(code);
    assert_eq!(unscoped.len(), 1, "{unscoped:?}");
    assert_eq!(unscoped[0].0, 6);
    // Granting it clears it.
    let granted = TopicScope { grants: vec!["sales.*".into(), "orders".into()], ..scope };
    assert_eq!(scoped(code, Some(&granted)).len(), 2);
}

#[test]
fn columns_count_utf16_units() {
    let code = "import aerogrid\napp = aerogrid.App('é😀')\napp.nope\n";
    assert_eq!(messages(code)[0].0, 3);
    let index = LineIndex::new("a😀b\n");
    assert_eq!(index.position(5), (1, 4));
}

#[tokio::test]
async fn hostile_depth_is_handled() {
    let deep = format!("x = {}1\n", "1 + ".repeat(60_000));
    let found = validate(deep, None, Default::default()).await;
    assert!(found.iter().any(|d| d.message.contains("creates no app")), "{found:?}");
    let nested = format!("x = {}1{}\n", "(".repeat(5_000), ")".repeat(5_000));
    let found = validate(nested, None, Default::default()).await;
    assert!(!found.is_empty());
    let huge = "#".repeat(MAX_CODE_BYTES + 1);
    assert!(validate(huge, None, Default::default()).await[0].message.contains("at most 256 KiB"));
}

#[test]
fn declared_packages_and_their_dependencies_import_and_others_are_errors_with_the_requirement() {
    use aerogrid_packages::{Lock, Requirements};
    let code = "import aerogrid\nimport numpy as np\nimport pandas\nfrom sklearn import linear_model\nimport dateutil\napp = aerogrid.App('a')\n";
    let requirements = Requirements::parse("numpy\npandas==2.2.3\n").unwrap();
    let lock = Lock { text: "numpy==2.1.0\npandas==2.2.3\npython-dateutil==2.9.0\n".into() };
    let declared = super::packages::Declared::new(&requirements, Some(&lock));
    let found = validate_now(code, None, &declared);
    let errors: Vec<_> = found.iter().filter(|d| d.severity == Severity::Error).collect();
    assert_eq!(errors.len(), 1, "{found:?}");
    assert_eq!(errors[0].line, 4);
    assert!(
        errors[0].message.contains("add `scikit-learn` to the app's requirements"),
        "{found:?}"
    );
    // Without requirements, numpy is not importable either.
    let bare = validate_now(code, None, &Default::default());
    assert!(bare.iter().any(|d| d.line == 2 && d.message.contains("add `numpy`")), "{bare:?}");
}

#[test]
fn serializers_are_checked_where_they_are_written() {
    let code = "import aerogrid\napp = aerogrid.App('a')\n\
                t = app.topic('t', value_serializer='avro')\n\
                u = app.topic('u', key_serializer='xml')\n\
                v = app.topic('v', value_serializer='protobuf')\n";
    let found = validate_now(code, None, &Default::default());
    let errors: Vec<(u32, &str)> = found
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 2, "{found:?}");
    assert_eq!(errors[0].0, 4);
    assert!(errors[0].1.starts_with("`xml` is not a serializer"), "{errors:?}");
    assert_eq!(errors[1].0, 5);
    assert!(errors[1].1.contains("not supported yet"), "{errors:?}");
}
