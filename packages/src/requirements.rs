//! Reading a requirements text. Only package requirements are taken: `name[extras] specifiers
//! ; markers`, one per line, with comments. Options (`-r`, `-e`, `--index-url`, ...), URLs and
//! paths are refused: indexes are the operator's to choose, and a file or URL would reach past
//! them.

/// Most lines a requirements text may have (a bound on what a save costs to check).
pub const MAX_LINES: usize = 1000;
/// Longest line.
pub const MAX_LINE_BYTES: usize = 1000;

/// One package a user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// 1-based line in the text.
    pub line: u32,
    /// As written.
    pub name: String,
    /// PEP 503's normalized form (lowercase, runs of `-_.` as one `-`): what names compare by.
    pub normalized: String,
    /// The line without its comment, as uv is given it.
    pub text: String,
}

/// What is wrong on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: u32,
    pub message: String,
}

/// The requirements of one app version; empty when it declares none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    pub packages: Vec<Requirement>,
}

impl Requirements {
    /// Reads `text`, or says what is wrong with each line that is.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let mut packages = Vec::new();
        let mut errors = Vec::new();
        // Lines end at `\n` (a `\r` before it is the CRLF of another editor); any other control
        // character is refused on its line.
        let lines: Vec<&str> = text
            .split_terminator('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .collect();
        if lines.len() > MAX_LINES {
            return Err(vec![LineError {
                line: u32::try_from(MAX_LINES + 1).unwrap_or(u32::MAX),
                message: format!("requirements have at most {MAX_LINES} lines"),
            }]);
        }
        for (index, line) in lines.iter().enumerate() {
            let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
            match parse_line(line) {
                Ok(None) => {}
                Ok(Some((name, text))) => packages.push(Requirement {
                    line: number,
                    normalized: normalize(&name),
                    name,
                    text,
                }),
                Err(message) => errors.push(LineError { line: number, message }),
            }
        }
        if errors.is_empty() { Ok(Self { packages }) } else { Err(errors) }
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The text uv is given: one requirement per line, comments gone.
    pub fn to_uv_input(&self) -> String {
        self.packages.iter().map(|package| format!("{}\n", package.text)).collect()
    }

    /// The line that asks for `name` (compared normalized), if one does.
    pub fn line_of(&self, name: &str) -> Option<u32> {
        let wanted = normalize(name);
        self.packages
            .iter()
            .find(|package| package.normalized == wanted)
            .map(|package| package.line)
    }
}

/// PEP 503: lowercase, each run of `-`, `_` and `.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    let mut in_separator = false;
    for character in name.chars() {
        if matches!(character, '-' | '_' | '.') {
            in_separator = true;
            continue;
        }
        if in_separator && !normalized.is_empty() {
            normalized.push('-');
        }
        in_separator = false;
        normalized.extend(character.to_lowercase());
    }
    normalized
}

fn allowed_in_requirement(character: char) -> bool {
    character.is_ascii_alphanumeric()
        || matches!(
            character,
            ' ' | '\t'
                | '-'
                | '_'
                | '.'
                | '['
                | ']'
                | ','
                | ';'
                | '='
                | '<'
                | '>'
                | '!'
                | '~'
                | '*'
                | '+'
                | '\''
                | '"'
                | '('
                | ')'
                | '@'
                | ':'
                | '/'
        )
}

fn describe_character(character: char) -> String {
    if character.is_control() {
        format!("a control character (U+{:04X})", u32::from(character))
    } else {
        format!("`{character}`")
    }
}

/// `Ok(None)` for a blank or comment line; the name and the requirement's text otherwise.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("a requirement line has at most {MAX_LINE_BYTES} bytes"));
    }
    // pip: a comment starts at `#` at the line's start or after whitespace.
    let text = match line.find(" #").or_else(|| line.find("\t#")) {
        _ if line.trim_start().starts_with('#') => "",
        Some(at) => &line[..at],
        None => line,
    }
    .trim();
    if text.is_empty() {
        return Ok(None);
    }
    // What a package requirement is written with (PEP 508 without URLs). Anything else (a
    // carriage return uv would read as a new line, `$` it would expand, `\` continuing a line)
    // could make uv read something other than what was checked.
    if let Some(odd) = text.chars().find(|character| !allowed_in_requirement(*character)) {
        return Err(format!(
            "{} is not part of a package requirement (letters, digits, spaces and `-_.[],;=<>!~*+'\"()` are)",
            describe_character(odd)
        ));
    }
    if text.starts_with('-') {
        let option = text.split_whitespace().next().unwrap_or(text);
        return Err(format!(
            "`{option}`: requirements name packages only (indexes are set by the operator; files, editable installs and other pip options are not taken)"
        ));
    }
    let (requirement, markers) = match text.split_once(';') {
        Some((requirement, markers)) => (requirement.trim(), Some(markers.trim())),
        None => (text, None),
    };
    if requirement.contains('@') || requirement.contains("://") {
        return Err("a requirement names a package from the index, not a URL or a file".into());
    }
    if requirement.contains('/') || requirement.contains('\\') {
        return Err("a requirement names a package from the index, not a file".into());
    }
    if markers.is_some_and(str::is_empty) {
        return Err("an environment marker is expected after `;`".into());
    }
    let name_end = requirement
        .find(|character: char| {
            !(character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
        })
        .unwrap_or(requirement.len());
    let name = &requirement[..name_end];
    if !is_name(name) {
        return Err(format!(
            "`{requirement}` does not start with a package name (letters, digits, `-`, `_`, `.`)"
        ));
    }
    let mut rest = requirement[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let Some((extras, after)) = after.split_once(']') else {
            return Err(format!("the extras of `{name}` are missing their closing `]`"));
        };
        if !extras.split(',').map(str::trim).all(|extra| extra.is_empty() || is_name(extra)) {
            return Err(format!(
                "`[{extras}]` are not extras of `{name}` (names, separated by commas)"
            ));
        }
        rest = after.trim_start();
    }
    check_specifiers(name, rest)?;
    Ok(Some((name.to_owned(), text.to_owned())))
}

fn is_name(name: &str) -> bool {
    let first_and_last_alphanumeric =
        name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    first_and_last_alphanumeric
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Version specifiers as PEP 440 writes them (`>=1.2, <2`, optionally in parentheses).
fn check_specifiers(name: &str, specifiers: &str) -> Result<(), String> {
    let specifiers = specifiers.trim();
    let specifiers = specifiers
        .strip_prefix('(')
        .and_then(|inner| inner.strip_suffix(')'))
        .unwrap_or(specifiers)
        .trim();
    if specifiers.is_empty() {
        return Ok(());
    }
    for clause in specifiers.split(',') {
        let clause = clause.trim();
        let operator = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"]
            .into_iter()
            .find(|operator| clause.starts_with(operator));
        let Some(operator) = operator else {
            return Err(format!(
                "`{clause}` after `{name}` is not a version specifier (e.g. `{name}>=2.0`, `{name}==2.1.*`)"
            ));
        };
        let version = clause[operator.len()..].trim();
        let version_like = !version.is_empty()
            && version.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '+' | '!' | '-' | '_')
            });
        if !version_like {
            return Err(format!("`{clause}`: `{operator}` needs a version after it"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(u32, String, String)> {
        Requirements::parse(text)
            .unwrap()
            .packages
            .into_iter()
            .map(|package| (package.line, package.normalized, package.text))
            .collect()
    }

    fn errors(text: &str) -> Vec<(u32, String)> {
        Requirements::parse(text)
            .unwrap_err()
            .into_iter()
            .map(|error| (error.line, error.message))
            .collect()
    }

    #[test]
    fn packages_are_read_with_their_lines_and_comments_gone() {
        let text = "# data\nnumpy>=2.0, <3  # arrays\n\nPandas[performance]==2.2.*\nscikit_learn ; python_version >= '3.9'\nZope.Interface\n";
        assert_eq!(
            names(text),
            vec![
                (2, "numpy".into(), "numpy>=2.0, <3".into()),
                (4, "pandas".into(), "Pandas[performance]==2.2.*".into()),
                (5, "scikit-learn".into(), "scikit_learn ; python_version >= '3.9'".into()),
                (6, "zope-interface".into(), "Zope.Interface".into()),
            ]
        );
        assert!(Requirements::parse("").unwrap().is_empty());
        assert!(Requirements::parse("  # nothing\n\n").unwrap().is_empty());
        let parsed = Requirements::parse("numpy\nscikit_learn>=1\n").unwrap();
        assert_eq!(parsed.to_uv_input(), "numpy\nscikit_learn>=1\n");
        assert_eq!((parsed.line_of("Scikit-Learn"), parsed.line_of("pandas")), (Some(2), None));
    }

    #[test]
    fn options_urls_and_files_are_refused_on_their_line() {
        let found = errors(
            "numpy\n--index-url https://evil.example/simple\n-e ./mine\nrequests @ https://x.example/r.whl\n./local.whl\n-r other.txt\n",
        );
        assert_eq!(found.iter().map(|(line, _)| *line).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
        assert!(
            found[0].1.starts_with("`--index-url`: requirements name packages only"),
            "{found:?}"
        );
        assert!(found[2].1.contains("not a URL or a file"), "{found:?}");
    }

    #[test]
    fn nothing_uv_would_read_otherwise_passes() {
        // A carriage return is a line end to uv: the marker would hide an option after it.
        let found = errors("numpy;os_name=='posix'\r-r /proc/self/environ\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.starts_with("a control character (U+000D)"), "{found:?}");
        for hostile in ["numpy==${HOME}\n", "numpy \\\n", "numpy\u{0}\n", "numpy#x\n"] {
            assert_eq!(errors(hostile).len(), 1, "{hostile:?}");
        }
        // A Windows editor's line ends are line ends.
        let parsed = Requirements::parse("numpy\r\npandas\r\n").unwrap();
        assert_eq!(parsed.to_uv_input(), "numpy\npandas\n");
    }

    #[test]
    fn bad_syntax_says_what_is_expected() {
        assert_eq!(
            errors("pandas[\n"),
            vec![(1, "the extras of `pandas` are missing their closing `]`".into())]
        );
        assert_eq!(
            errors("numpy 2.0\n"),
            vec![(1, "`2.0` after `numpy` is not a version specifier (e.g. `numpy>=2.0`, `numpy==2.1.*`)".into())]
        );
        assert_eq!(errors("numpy>=\n"), vec![(1, "`>=`: `>=` needs a version after it".into())]);
        assert_eq!(
            errors("!numpy\n"),
            vec![(
                1,
                "`!numpy` does not start with a package name (letters, digits, `-`, `_`, `.`)"
                    .into()
            )]
        );
        assert_eq!(
            errors("numpy;\n"),
            vec![(1, "an environment marker is expected after `;`".into())]
        );
    }

    #[test]
    fn hostile_sizes_are_refused() {
        let many = "numpy\n".repeat(MAX_LINES + 1);
        assert_eq!(errors(&many), vec![(1001, "requirements have at most 1000 lines".into())]);
        let long = format!("numpy{}\n", " ".repeat(MAX_LINE_BYTES));
        assert_eq!(errors(&long), vec![(1, "a requirement line has at most 1000 bytes".into())]);
    }

    #[test]
    fn names_normalize_as_pep_503_says() {
        for (name, normalized) in [
            ("Django", "django"),
            ("zope.interface", "zope-interface"),
            ("a__b-.c", "a-b-c"),
            ("ruamel.yaml", "ruamel-yaml"),
        ] {
            assert_eq!(normalize(name), normalized);
        }
    }
}
