//! Checks a connector's code without running it: Python syntax, then the platform's own rules
//! (exactly one App, streams over declared topics, names aerogrid has, imports the sandbox
//! allows, topics the team may read). Each finding is a diagnostic an editor can show at its
//! line and column.
//!
//! The parse runs on a thread of its own with a large stack: the syntax tree of hostile code can
//! be deep (a 100,000-term sum), and both walking and dropping it recurse.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

pub use aerogrid_api::{Diagnostic, Severity, SourceFile};

pub mod packages;
pub mod stubs;
use rustpython_ast::{self as ast, Ranged, Visitor, text_size::TextRange};
use rustpython_parser::{Mode, parse};

/// Code above this size is refused before parsing (a connector is a few hundred lines).
pub const MAX_CODE_BYTES: usize = 256 * 1024;
const PARSER_STACK_BYTES: usize = 256 << 20;

/// Whose code is checked: the team and its topic grants (see `aerogrid_policy::topics`).
/// Without one, only platform topics are refused.
#[derive(Clone, Debug, Default)]
pub struct TopicScope {
    pub team: String,
    pub grants: Vec<String>,
}

/// Whether diagnostics let the code start.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|diagnostic| diagnostic.severity == Severity::Error)
}

/// The diagnostics of `code`, sorted by position: for the team of `scope`, if given, with the
/// packages it `declared` (imports of others are errors).
pub async fn validate(
    code: String,
    scope: Option<TopicScope>,
    declared: packages::Declared,
) -> Vec<Diagnostic> {
    if code.len() > MAX_CODE_BYTES {
        return vec![at_start(
            Severity::Error,
            format!(
                "the code is {} KiB; a connector may have at most {} KiB",
                code.len() / 1024,
                MAX_CODE_BYTES / 1024
            ),
        )];
    }
    // A few checks at a time (each may take a large stack on hostile code); the rest wait their
    // turn, for a while.
    let Ok(Ok(permit)) = tokio::time::timeout(CHECKER_WAIT, CHECKER_SLOTS.acquire()).await else {
        return vec![internal("the checker is busy")];
    };
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("validate".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            let _permit = permit;
            let _ = done.send(validate_now(&code, scope.as_ref(), &declared));
        });
    match spawned {
        Ok(_) => result.await.unwrap_or_else(|_| vec![internal("the checker stopped")]),
        Err(error) => vec![internal(&format!("cannot start the checker: {error}"))],
    }
}

/// Checks (and diffs) that run at once: one per core.
pub(crate) static CHECKER_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(crate::heavy_work_slots()));
/// How long a check waits for a slot before the code is saved unchecked.
pub(crate) const CHECKER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn internal(why: &str) -> Diagnostic {
    at_start(
        Severity::Warning,
        format!("the code could not be checked ({why}); it was saved unchecked"),
    )
}

/// A finding about the code as a whole, shown at its start.
fn at_start(severity: Severity, message: String) -> Diagnostic {
    Diagnostic {
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
        severity,
        message,
        file: SourceFile::Code,
        grantable_topic: None,
    }
}

/// The checks, on the calling thread (which needs a large stack for hostile code).
pub fn validate_now(
    code: &str,
    scope: Option<&TopicScope>,
    declared: &packages::Declared,
) -> Vec<Diagnostic> {
    let lines = LineIndex::new(code);
    let module = match parse(code, Mode::Module, "<app>") {
        Ok(ast::Mod::Module(module)) => module,
        Ok(_) => return Vec::new(),
        Err(error) => {
            let at = u32::from(error.offset) as usize;
            let (line, column) = lines.position(at);
            return vec![Diagnostic {
                line,
                column,
                end_line: line,
                end_column: column + 1,
                severity: Severity::Error,
                message: format!("SyntaxError: {}", error.error),
                file: SourceFile::Code,
                grantable_topic: None,
            }];
        }
    };
    let mut checker = Checker::new(&lines, scope, declared);
    checker.check_module(module.body);
    let mut diagnostics = checker.diagnostics;
    diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
    diagnostics
}

/// The public names of the `aerogrid` module and of `App`, read from the stubs editors use, so
/// the two cannot disagree.
struct Api {
    module: HashSet<String>,
    app: HashSet<String>,
}

static API: LazyLock<Api> = LazyLock::new(|| {
    let (module, app) = stubs::names();
    Api { module, app }
});

fn name_of(expression: &ast::Expr) -> Option<String> {
    match expression {
        ast::Expr::Name(name) => Some(name.id.to_string()),
        _ => None,
    }
}

struct Checker<'a> {
    lines: &'a LineIndex<'a>,
    scope: Option<&'a TopicScope>,
    declared: &'a packages::Declared,
    diagnostics: Vec<Diagnostic>,
    /// Names bound to the `aerogrid` module.
    module_aliases: HashSet<String>,
    /// Names bound by `from aerogrid import X as Y`: Y → X.
    imported: HashMap<String, String>,
    /// Module-level names bound to the App, and the first App's range.
    apps: HashSet<String>,
    first_app: Option<TextRange>,
    /// Module-level names bound to `app.topic(...)`.
    topics: HashSet<String>,
}

impl<'a> Checker<'a> {
    fn new(
        lines: &'a LineIndex<'a>,
        scope: Option<&'a TopicScope>,
        declared: &'a packages::Declared,
    ) -> Self {
        Self {
            lines,
            scope,
            declared,
            diagnostics: Vec::new(),
            module_aliases: HashSet::new(),
            imported: HashMap::new(),
            apps: HashSet::new(),
            first_app: None,
            topics: HashSet::new(),
        }
    }

    fn report(&mut self, range: TextRange, severity: Severity, message: String) {
        let (line, column) = self.lines.position(u32::from(range.start()) as usize);
        let (end_line, end_column) = self.lines.position(u32::from(range.end()) as usize);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            end_line,
            end_column,
            severity,
            message,
            file: SourceFile::Code,
            grantable_topic: None,
        });
    }

    fn check_module(&mut self, body: Vec<ast::Stmt>) {
        // Imports and module-level bindings first: a name may be used (in a function) above
        // the line that binds it.
        for statement in &body {
            self.bind(statement);
        }
        for statement in &body {
            self.check_streams(statement);
        }
        for statement in body {
            self.visit_stmt(statement);
        }
        if self.first_app.is_none() {
            self.diagnostics.push(at_start(
                Severity::Error,
                "the module creates no app: add `app = aerogrid.App('name', broker=BROKER_URI)`"
                    .to_owned(),
            ));
        }
    }

    fn bind(&mut self, statement: &ast::Stmt) {
        match statement {
            ast::Stmt::Import(import) => {
                for alias in &import.names {
                    if alias.name.as_str() == "aerogrid" {
                        let bound = alias.asname.as_ref().unwrap_or(&alias.name);
                        self.module_aliases.insert(bound.to_string());
                    }
                }
            }
            ast::Stmt::ImportFrom(import)
                if import.module.as_ref().is_some_and(|module| module.as_str() == "aerogrid") =>
            {
                for alias in &import.names {
                    let bound = alias.asname.as_ref().unwrap_or(&alias.name);
                    self.imported.insert(bound.to_string(), alias.name.to_string());
                }
            }
            ast::Stmt::Assign(assign) => {
                if self.is_app_call(&assign.value) {
                    self.apps.extend(assign.targets.iter().filter_map(name_of));
                } else if self.is_topic_call(&assign.value) {
                    self.topics.extend(assign.targets.iter().filter_map(name_of));
                }
            }
            ast::Stmt::AnnAssign(assign) => {
                if let Some(value) = &assign.value {
                    if self.is_app_call(value) {
                        self.apps.extend(name_of(&assign.target));
                    } else if self.is_topic_call(value) {
                        self.topics.extend(name_of(&assign.target));
                    }
                }
            }
            _ => {}
        }
    }

    /// `aerogrid.App(...)`, or `App(...)` imported from aerogrid.
    fn is_app_call(&self, expression: &ast::Expr) -> bool {
        let ast::Expr::Call(call) = expression else { return false };
        self.is_app_class(&call.func)
    }

    fn is_app_class(&self, expression: &ast::Expr) -> bool {
        match expression {
            ast::Expr::Attribute(attribute) => {
                attribute.attr.as_str() == "App" && self.is_module(&attribute.value)
            }
            ast::Expr::Name(name) => {
                self.imported.get(name.id.as_str()).is_some_and(|original| original == "App")
            }
            _ => false,
        }
    }

    fn is_module(&self, expression: &ast::Expr) -> bool {
        matches!(expression, ast::Expr::Name(name) if self.module_aliases.contains(name.id.as_str()))
    }

    fn is_app(&self, expression: &ast::Expr) -> bool {
        matches!(expression, ast::Expr::Name(name) if self.apps.contains(name.id.as_str()))
    }

    /// `app.topic(...)` on a module-level app.
    fn is_topic_call(&self, expression: &ast::Expr) -> bool {
        let ast::Expr::Call(call) = expression else { return false };
        matches!(&*call.func, ast::Expr::Attribute(attribute)
            if attribute.attr.as_str() == "topic" && self.is_app(&attribute.value))
    }

    /// `@app.stream(...)` takes topics declared with `app.topic(...)`.
    fn check_streams(&mut self, statement: &ast::Stmt) {
        let decorators = match statement {
            ast::Stmt::FunctionDef(function) => &function.decorator_list,
            ast::Stmt::AsyncFunctionDef(function) => &function.decorator_list,
            _ => return,
        };
        for decorator in decorators {
            match decorator {
                ast::Expr::Attribute(attribute)
                    if attribute.attr.as_str() == "stream" && self.is_app(&attribute.value) =>
                {
                    self.report(
                        decorator.range(),
                        Severity::Error,
                        "@app.stream needs the topics it reads: @app.stream(orders_topic)".into(),
                    );
                }
                ast::Expr::Call(call) => {
                    let ast::Expr::Attribute(attribute) = &*call.func else { continue };
                    if attribute.attr.as_str() != "stream" || !self.is_app(&attribute.value) {
                        continue;
                    }
                    if call.args.is_empty() {
                        self.report(
                            decorator.range(),
                            Severity::Error,
                            "@app.stream needs at least one topic: @app.stream(orders_topic)"
                                .into(),
                        );
                    }
                    for argument in &call.args {
                        self.check_stream_topic(argument);
                    }
                }
                _ => {}
            }
        }
    }

    fn check_stream_topic(&mut self, argument: &ast::Expr) {
        let message = match argument {
            ast::Expr::Name(name) if self.topics.contains(name.id.as_str()) => return,
            _ if self.is_topic_call(argument) => return,
            ast::Expr::Constant(ast::ExprConstant { value: ast::Constant::Str(topic), .. }) => {
                format!(
                    "@app.stream takes topics declared with app.topic(...), not a name: \
                     declare `{}_topic = app.topic('{topic}', value_type=...)` and stream that",
                    identifier_like(topic)
                )
            }
            ast::Expr::Name(name) => format!(
                "`{}` is not a topic declared with app.topic(...) at the module's top level",
                name.id
            ),
            _ => "@app.stream takes topics declared with app.topic(...)".to_owned(),
        };
        self.report(argument.range(), Severity::Error, message);
    }

    /// `key_serializer=` and `value_serializer=` of `app.topic(...)`: one the connector decodes.
    fn check_serializers(&mut self, call: &ast::ExprCall) {
        const DECODED: &[&str] = &["json", "avro", "json-schema", "raw", "str"];
        for keyword in &call.keywords {
            let Some(arg) = keyword.arg.as_ref().map(|arg| arg.as_str()) else { continue };
            if arg != "key_serializer" && arg != "value_serializer" {
                continue;
            }
            let ast::Expr::Constant(ast::ExprConstant { value: ast::Constant::Str(name), .. }) =
                &keyword.value
            else {
                continue;
            };
            let message = match name.as_str() {
                known if DECODED.contains(&known) => continue,
                "protobuf" => "the `protobuf` serializer is not supported yet (json, avro, json-schema, raw and str are)".to_owned(),
                other => format!(
                    "`{other}` is not a serializer: json, avro, protobuf, json-schema, raw or str"
                ),
            };
            self.report(keyword.value.range(), Severity::Error, message);
        }
    }

    /// `app.topic(name, ...)`: a topic the team may read (the runtime node checks again, and
    /// checks names that are not literals).
    fn check_topic_access(&mut self, call: &ast::ExprCall) {
        self.check_serializers(call);
        let name = call.args.first().or_else(|| {
            call.keywords
                .iter()
                .find(|keyword| keyword.arg.as_ref().is_some_and(|arg| arg.as_str() == "name"))
                .map(|keyword| &keyword.value)
        });
        let Some(name) = name else { return };
        let ast::Expr::Constant(ast::ExprConstant { value: ast::Constant::Str(topic), .. }) = name
        else {
            if self.scope.is_some() {
                self.report(
                    name.range(),
                    Severity::Warning,
                    "the topic's name is not a string literal: whether the team may read it is checked when the app starts".into(),
                );
            }
            return;
        };
        let refusal = match self.scope {
            Some(scope) => aerogrid_policy::topics::check_topic(&scope.team, &scope.grants, topic),
            None if aerogrid_policy::topics::is_platform_topic(topic) => {
                Err(aerogrid_policy::topics::TopicRefusal::Platform { topic: topic.clone() })
            }
            None => Ok(()),
        };
        if let Err(refusal) = refusal {
            self.report(call.range, Severity::Error, refusal.to_string());
            if matches!(refusal, aerogrid_policy::topics::TopicRefusal::NotGranted { .. })
                && let Some(last) = self.diagnostics.last_mut()
            {
                last.grantable_topic = Some(topic.clone());
            }
        }
    }

    fn check_import(&mut self, module: &str, range: TextRange) {
        if let Some(cause) = aerogrid_policy::refused_import(module) {
            self.report(range, Severity::Error, format!("import {module}: {}", cause.describe()));
        } else if !aerogrid_policy::importable(module) && !self.declared.provides(module) {
            let package = packages::package_for(module);
            self.report(
                range,
                Severity::Error,
                format!(
                    "module `{module}` is not in the standard library or a declared package: \
                     add `{package}` to the app's requirements"
                ),
            );
        } else if let Some(cause) = aerogrid_policy::refused_use(module) {
            self.report(
                range,
                Severity::Warning,
                format!("`{module}` imports, but {}: its use will fail the app", cause.describe()),
            );
        }
    }

    fn unknown_name(&mut self, range: TextRange, name: &str) {
        let mut message = format!("aerogrid has no `{name}`");
        if let Some(close) = API.module.iter().find(|known| known.eq_ignore_ascii_case(name)) {
            message.push_str(&format!(" (did you mean `{close}`?)"));
        } else if API.app.contains(name) {
            message.push_str(&format!(" (`{name}` belongs to the app: `app.{name}`)"));
        }
        self.report(range, Severity::Error, message);
    }
}

impl Visitor for Checker<'_> {
    fn visit_stmt(&mut self, statement: ast::Stmt) {
        match &statement {
            ast::Stmt::Import(import) => {
                for alias in &import.names {
                    self.check_import(alias.name.as_str(), import.range);
                }
            }
            ast::Stmt::ImportFrom(import)
                if import.level.is_none_or(|level| level.to_u32() == 0) =>
            {
                let Some(module) = &import.module else { return };
                if module.as_str() == "aerogrid" {
                    for alias in &import.names {
                        if alias.name.as_str() != "*" && !API.module.contains(alias.name.as_str()) {
                            self.unknown_name(import.range, alias.name.as_str());
                        }
                    }
                } else {
                    self.check_import(module.as_str(), import.range);
                    // `from urllib import request` reaches `urllib.request`.
                    for alias in &import.names {
                        let submodule = format!("{module}.{}", alias.name);
                        if aerogrid_policy::refused_use(&submodule).is_some()
                            || aerogrid_policy::refused_import(&submodule).is_some()
                        {
                            self.check_import(&submodule, import.range);
                        }
                    }
                }
            }
            _ => {}
        }
        self.generic_visit_stmt(statement);
    }

    fn visit_expr(&mut self, expression: ast::Expr) {
        match &expression {
            ast::Expr::Call(call) if self.is_app_class(&call.func) => match self.first_app {
                None => self.first_app = Some(call.range),
                Some(first) => {
                    let (line, _) = self.lines.position(u32::from(first.start()) as usize);
                    self.report(
                        call.range,
                        Severity::Error,
                        format!(
                            "a module creates exactly one app; this is a second one (the first is on line {line})"
                        ),
                    );
                }
            },
            ast::Expr::Call(call) if self.is_topic_call(&expression) => {
                self.check_topic_access(call);
            }
            ast::Expr::Attribute(attribute) => {
                let name = attribute.attr.as_str();
                if self.is_module(&attribute.value) && !API.module.contains(name) {
                    self.unknown_name(attribute.range, name);
                } else if self.is_app(&attribute.value) && !API.app.contains(name) {
                    let mut known: Vec<&str> = API
                        .app
                        .iter()
                        .map(String::as_str)
                        .filter(|n| !n.starts_with('_'))
                        .collect();
                    known.sort_unstable();
                    self.report(
                        attribute.range,
                        Severity::Error,
                        format!("the app has no `{name}`; it has {}", known.join(", ")),
                    );
                }
            }
            _ => {}
        }
        self.generic_visit_expr(expression);
    }
}

fn identifier_like(text: &str) -> String {
    let cleaned: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if cleaned.is_empty() { "my".to_owned() } else { cleaned }
}

/// Byte offsets to 1-based lines and UTF-16 columns.
struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let starts =
            std::iter::once(0).chain(source.match_indices('\n').map(|(at, _)| at + 1)).collect();
        Self { source, starts }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|start| *start <= offset).max(1);
        let start = self.starts[line - 1];
        let text = self.source.get(start..offset).unwrap_or_default();
        let column = text.encode_utf16().count() + 1;
        (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests;
