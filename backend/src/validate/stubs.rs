//! The `aerogrid` API as its type stubs (`connector/python/aerogrid/__init__.pyi`) declare it,
//! read by the one parser of the platform (rustpython's): the validator's known names, and the
//! editor's completion and hover data (`frontend/editor/aerogrid-api.json`, generated from here
//! and checked by a test, so the editor never parses Python itself).

use std::collections::HashSet;

use rustpython_ast::{self as ast, Ranged};
use rustpython_parser::{Mode, parse};
use serde_json::{Map, Value, json};

pub const STUBS: &str = include_str!("../../../connector/python/aerogrid/__init__.pyi");

/// One public statement of the stubs.
#[derive(Debug)]
struct Item {
    kind: Kind,
    name: String,
    doc: String,
}

#[derive(Debug)]
enum Kind {
    Class {
        bases: Vec<String>,
        members: Vec<Item>,
    },
    /// A function, method or property, with its signatures (more than one with `@overload`).
    Function {
        kind: &'static str,
        signatures: Vec<String>,
        returns: String,
    },
    /// An annotated name: a module variable or a class attribute.
    Annotated {
        kind: &'static str,
        type_text: String,
    },
    /// `Name = ...`: type aliases and TypeVars, which programs do not use from the module.
    Alias,
}

fn module() -> Vec<ast::Stmt> {
    match parse(STUBS, Mode::Module, "aerogrid.pyi") {
        Ok(ast::Mod::Module(module)) => module.body,
        _ => panic!("the aerogrid stubs do not parse"),
    }
}

/// The public names of the module, and of `App`.
pub(crate) fn names() -> (HashSet<String>, HashSet<String>) {
    let items = block(&module(), false);
    let public = |item: &&Item| !item.name.starts_with('_');
    let module = items.iter().filter(public).map(|item| item.name.clone()).collect();
    let app = items
        .iter()
        .find_map(|item| match &item.kind {
            Kind::Class { members, .. } if item.name == "App" => Some(members),
            _ => None,
        })
        .map(|members| members.iter().map(|member| member.name.clone()).collect())
        .unwrap_or_default();
    (module, app)
}

fn block(statements: &[ast::Stmt], in_class: bool) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut index = 0;
    while index < statements.len() {
        let statement = &statements[index];
        index += 1;
        // A string right after an annotated name or an alias documents it.
        let mut doc_after = || {
            let doc = statements.get(index).and_then(docstring);
            if doc.is_some() {
                index += 1;
            }
            doc.unwrap_or_default()
        };
        match statement {
            ast::Stmt::ClassDef(class) => items.push(Item {
                kind: Kind::Class {
                    bases: class.bases.iter().map(|base| tidy(source(base))).collect(),
                    members: block(&class.body, true),
                },
                name: class.name.to_string(),
                doc: class.body.first().and_then(docstring).unwrap_or_default(),
            }),
            ast::Stmt::FunctionDef(function) => {
                let def = Def { name: &function.name, decorators: &function.decorator_list };
                add_function(&mut items, statement, def, &function.body, in_class);
            }
            ast::Stmt::AsyncFunctionDef(function) => {
                let def = Def { name: &function.name, decorators: &function.decorator_list };
                add_function(&mut items, statement, def, &function.body, in_class);
            }
            ast::Stmt::AnnAssign(assign) => {
                if let ast::Expr::Name(name) = assign.target.as_ref() {
                    let kind = if in_class { "attribute" } else { "variable" };
                    let type_text = tidy(source(assign.annotation.as_ref()));
                    items.push(Item {
                        kind: Kind::Annotated { kind, type_text },
                        name: name.id.to_string(),
                        doc: doc_after(),
                    });
                }
            }
            ast::Stmt::Assign(assign) => {
                if let [ast::Expr::Name(name)] = assign.targets.as_slice() {
                    items.push(Item {
                        kind: Kind::Alias,
                        name: name.id.to_string(),
                        doc: doc_after(),
                    });
                }
            }
            _ => {}
        }
    }
    items
}

/// A function's header, `name(...) -> returns` (without decorators, `def`, the colon and body).
fn header(statement: &ast::Stmt, decorators: &[ast::Expr], body: &[ast::Stmt]) -> &'static str {
    let from = decorators.last().map_or(statement.range().start(), |last| last.range().end());
    let to = body.first().map_or(statement.range().end(), |first| first.range().start());
    let text = &STUBS[usize::from(from)..usize::from(to)];
    let text = &text[text.find("def ").map_or(0, |at| at + 4)..];
    text.trim_end().trim_end_matches(':').trim_end()
}

/// What `def` and `async def` share.
struct Def<'a> {
    name: &'a str,
    decorators: &'a [ast::Expr],
}

fn add_function(
    items: &mut Vec<Item>,
    statement: &ast::Stmt,
    def: Def<'_>,
    body: &[ast::Stmt],
    in_class: bool,
) {
    let name = def.name;
    let decorators: Vec<&str> = def.decorators.iter().map(source).collect();
    let header = header(statement, def.decorators, body);
    let doc = body.first().and_then(docstring).unwrap_or_default();
    let open = header.find('(').unwrap_or(header.len());
    let end = match_bracket(header, open);
    let mut params = header[open..end].to_owned();
    let arrow = header[end..].trim();
    let returns = arrow.strip_prefix("->").map(tidy).unwrap_or_default();
    let is_static = decorators.contains(&"staticmethod");
    let is_property = decorators.contains(&"property");
    if in_class && !is_static {
        params = drop_receiver(&params);
    }
    let arrow = if returns.is_empty() { String::new() } else { format!(" -> {returns}") };
    let signature = format!("{name}{}{arrow}", tidy(&params));
    let kind = match (in_class, is_property) {
        (false, _) => "function",
        (true, true) => "property",
        (true, false) => "method",
    };
    let previous = items.iter_mut().find(|item| {
        item.name == name && matches!(&item.kind, Kind::Function { kind: k, .. } if *k == kind)
    });
    if let Some(previous) = previous {
        // Overloads add their signature; the implementation after them adds only its doc.
        if decorators.contains(&"overload")
            && let Kind::Function { signatures, .. } = &mut previous.kind
        {
            signatures.push(signature);
        }
        if previous.doc.is_empty() {
            previous.doc = doc;
        }
        return;
    }
    items.push(Item {
        kind: Kind::Function { kind, signatures: vec![signature], returns },
        name: name.to_owned(),
        doc,
    });
}

fn source(node: &impl Ranged) -> &'static str {
    let range = node.range();
    &STUBS[usize::from(range.start())..usize::from(range.end())]
}

/// The value of a statement that is only a string literal, as `inspect.cleandoc` leaves it.
fn docstring(statement: &ast::Stmt) -> Option<String> {
    let ast::Stmt::Expr(expression) = statement else { return None };
    let ast::Expr::Constant(constant) = expression.value.as_ref() else { return None };
    let ast::Constant::Str(text) = &constant.value else { return None };
    Some(cleandoc(text))
}

/// Python's `inspect.cleandoc`: the first line stripped, the rest dedented, blank edges dropped.
fn cleandoc(doc: &str) -> String {
    let doc = doc.replace('\t', "        ");
    let lines: Vec<&str> = doc.split('\n').collect();
    let indent = |line: &&str| line.len() - line.trim_start().len();
    let margin =
        lines.iter().skip(1).filter(|line| !line.trim().is_empty()).map(indent).min().unwrap_or(0);
    let mut result: Vec<String> = vec![lines[0].trim().to_owned()];
    result.extend(
        lines.iter().skip(1).map(|line| line.get(margin..).unwrap_or("").trim_end().to_owned()),
    );
    while result.first().is_some_and(String::is_empty) {
        result.remove(0);
    }
    while result.last().is_some_and(String::is_empty) {
        result.pop();
    }
    result.join("\n")
}

/// One space between words; none inside brackets' edges or before a closing one's comma.
fn tidy(text: &str) -> String {
    let spaced = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(spaced.len());
    for c in spaced.chars() {
        if ")]}".contains(c) {
            while out.ends_with(' ') || out.ends_with(',') {
                out.pop();
            }
        }
        if c == ' ' && out.ends_with(['(', '[', '{']) {
            continue;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// The index just after the bracket matching the one at `open`, skipping strings.
fn match_bracket(text: &str, open: usize) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0;
    let mut index = open;
    while index < bytes.len() {
        match bytes[index] {
            quote @ (b'"' | b'\'') => {
                index =
                    text[index + 1..].find(quote as char).map_or(bytes.len(), |at| index + 1 + at);
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return index + 1;
                }
            }
            _ => {}
        }
        index += 1;
    }
    text.len()
}

/// Splits at the commas outside brackets.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0i32, 0);
    for (index, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[from..index]);
                from = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[from..]);
    parts
}

/// A method's parameters without its first (`self` or `cls`).
fn drop_receiver(params: &str) -> String {
    let inner = &params[1..params.len().saturating_sub(1)];
    format!("({})", split_top(inner)[1..].join(",").trim())
}

/// The editor's view of the API: `{module: {name, doc}, names: {Name: entry}}`, the JSON that
/// `frontend/editor/aerogrid-python.js` imports.
pub fn editor_api() -> Value {
    let items = block(&module(), false);
    let class_names: HashSet<&str> = items
        .iter()
        .filter(|item| matches!(item.kind, Kind::Class { .. }))
        .map(|item| item.name.as_str())
        .collect();
    let mut names = Map::new();
    for item in &items {
        if item.name.starts_with('_') {
            continue;
        }
        let entry = match &item.kind {
            Kind::Alias => continue,
            Kind::Class { bases, members } => {
                class_entry(item, bases, members, &items, &class_names)
            }
            Kind::Function { signatures, returns, .. } => json!({
                "kind": "function", "signatures": signatures, "returns": returns, "doc": item.doc,
            }),
            Kind::Annotated { type_text, .. } => {
                json!({ "kind": "variable", "type": type_text, "doc": item.doc })
            }
        };
        names.insert(item.name.clone(), entry);
    }
    let doc = STUBS
        .lines()
        .find(|line| line.starts_with('#'))
        .map(|line| line.trim_start_matches('#').strip_prefix(' ').unwrap_or(line).to_owned())
        .unwrap_or_default();
    json!({ "module": { "name": "aerogrid", "doc": doc }, "names": names })
}

fn class_entry(
    class: &Item,
    bases: &[String],
    members: &[Item],
    top: &[Item],
    class_names: &HashSet<&str>,
) -> Value {
    let init = members.iter().find_map(|member| match &member.kind {
        Kind::Function { signatures, .. } if member.name == "__init__" => signatures.first(),
        _ => None,
    });
    let params = init.map_or(String::new(), |signature| {
        let params = signature.trim_start_matches("__init__");
        params.strip_suffix(" -> None").unwrap_or(params).to_owned()
    });
    // Members of base classes in the stubs come first, then the class's own.
    let inherited = bases.iter().filter_map(|base| {
        top.iter().find_map(|item| match &item.kind {
            Kind::Class { members, .. } if item.name == *base => Some(members),
            _ => None,
        })
    });
    let mut entries = Map::new();
    for member in inherited.flatten().chain(members) {
        if member.name.starts_with('_') {
            continue;
        }
        let mut entry = match &member.kind {
            Kind::Function { kind, signatures, returns } => {
                let mut entry = json!({
                    "kind": kind, "doc": member.doc, "signatures": signatures, "returns": returns,
                });
                if *kind == "property" {
                    entry["type"] = json!(returns);
                }
                entry
            }
            Kind::Annotated { kind, type_text } => {
                json!({ "kind": kind, "doc": member.doc, "type": type_text })
            }
            Kind::Alias | Kind::Class { .. } => continue,
        };
        // Return types that name a class of the module, so the editor can follow `app.Grid(...)`.
        let returned = entry
            .get("returns")
            .and_then(Value::as_str)
            .filter(|returns| !returns.is_empty())
            .or_else(|| entry.get("type").and_then(Value::as_str))
            .unwrap_or_default();
        let returned = returned.trim_start_matches("aerogrid.").to_owned();
        if class_names.contains(returned.as_str()) {
            entry["returnsClass"] = json!(returned);
        }
        entries.insert(member.name.clone(), entry);
    }
    json!({
        "kind": "class",
        "signature": format!("class {}{params}", class.name),
        "bases": bases,
        "doc": class.doc,
        "members": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = "frontend/editor/aerogrid-api.json";

    /// The editor's API file is what the stubs say; `UPDATE_EXPECT=1` writes it.
    #[test]
    fn the_editor_api_file_is_generated_from_the_stubs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(GENERATED);
        let generated = serde_json::to_string_pretty(&editor_api()).unwrap() + "\n";
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{GENERATED} is not what the stubs say: run `UPDATE_EXPECT=1 cargo test -p aerogrid-backend stubs`"
        );
    }

    #[test]
    fn the_api_has_what_the_editor_and_the_validator_rely_on() {
        let api = editor_api();
        let app = &api["names"]["App"];
        assert_eq!(app["kind"], "class");
        assert!(app["members"]["topic"]["signatures"][0].as_str().unwrap().starts_with("topic("));
        assert_eq!(app["members"]["Grid"]["returnsClass"], "Grid", "{}", app["members"]["Grid"]);
        let (module, app) = names();
        assert!(module.contains("App") && module.contains("Record") && !module.contains("_R"));
        assert!(app.contains("topic") && app.contains("stream") && app.contains("Grid"));
    }

    #[test]
    fn text_is_tidied_as_signatures_show_it() {
        assert_eq!(tidy("(a: int,\n     b: str = 'x', )"), "(a: int, b: str = 'x')");
        assert_eq!(
            drop_receiver("(self, a: int, b: list[int, str])"),
            "(a: int, b: list[int, str])"
        );
        assert_eq!(match_bracket("f(a, ')', (b)) -> x", 1), 14);
        assert_eq!(
            cleandoc("First.\n\n    More\n      indented\n    "),
            "First.\n\nMore\n  indented"
        );
    }
}
