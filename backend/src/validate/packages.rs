//! An app's requirements as validation sees them: what is wrong on their lines, and which
//! imports they provide.

use std::collections::HashSet;

use aerogrid_api::{Diagnostic, Severity, SourceFile};
use aerogrid_packages::{LineError, Lock, Requirements, normalize};

/// Imports whose module is not named like the package that provides it, for the packages
/// users reach for most: module → package.
const MODULE_PACKAGES: &[(&str, &str)] = &[
    ("attr", "attrs"),
    ("bs4", "beautifulsoup4"),
    ("cv2", "opencv-python-headless"),
    ("dateutil", "python-dateutil"),
    ("dotenv", "python-dotenv"),
    ("google.protobuf", "protobuf"),
    ("jwt", "pyjwt"),
    ("pil", "pillow"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("yaml", "pyyaml"),
    ("zmq", "pyzmq"),
    ("crypto", "pycryptodome"),
    ("dns", "dnspython"),
    ("serial", "pyserial"),
    ("magic", "python-magic"),
    ("openssl", "pyopenssl"),
    ("pkg_resources", "setuptools"),
    ("fitz", "pymupdf"),
];

/// The packages an app declares and those its lock adds (dependencies it may import too).
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// Normalized package names.
    names: HashSet<String>,
}

impl Declared {
    pub fn new(requirements: &Requirements, lock: Option<&Lock>) -> Self {
        let mut names: HashSet<String> =
            requirements.packages.iter().map(|package| package.normalized.clone()).collect();
        if let Some(lock) = lock {
            names.extend(lock.packages().into_iter().map(|(name, _)| normalize(&name)));
        }
        Self { names }
    }

    /// Whether importing `module` (dotted) is provided by a declared package.
    pub fn provides(&self, module: &str) -> bool {
        let package = package_for(module);
        self.names.contains(&package)
    }
}

/// The package that provides `module`, as its requirement would name it.
pub fn package_for(module: &str) -> String {
    let lower = module.to_ascii_lowercase();
    MODULE_PACKAGES
        .iter()
        .find(|(prefix, _)| {
            lower == *prefix || lower.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|(_, package)| (*package).to_owned())
        .unwrap_or_else(|| normalize(lower.split('.').next().unwrap_or(&lower)))
}

/// The requirements, and what is wrong on their lines (then they are not installable).
pub fn read(text: &str) -> (Requirements, Vec<Diagnostic>) {
    match Requirements::parse(text) {
        Ok(requirements) => (requirements, Vec::new()),
        Err(errors) => (Requirements::default(), on_lines(text, &errors, Severity::Error)),
    }
}

/// Line errors as diagnostics spanning their lines.
pub fn on_lines(text: &str, errors: &[LineError], severity: Severity) -> Vec<Diagnostic> {
    errors
        .iter()
        .map(|error| {
            let width = text
                .lines()
                .nth(error.line.saturating_sub(1) as usize)
                .map_or(0, |line| line.encode_utf16().count());
            Diagnostic {
                line: error.line,
                column: 1,
                end_line: error.line,
                end_column: u32::try_from(width).unwrap_or(u32::MAX).saturating_add(1),
                severity,
                message: error.message.clone(),
                file: SourceFile::Requirements,
                grantable_topic: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_matched_to_the_packages_that_provide_them() {
        assert_eq!(package_for("numpy.linalg"), "numpy");
        assert_eq!(package_for("sklearn.linear_model"), "scikit-learn");
        assert_eq!(package_for("PIL.Image"), "pillow");
        assert_eq!(package_for("typing_extensions"), "typing-extensions");
        let requirements = Requirements::parse("pandas==2.2.3\nPyYAML\n").unwrap();
        let lock =
            Lock { text: "numpy==2.1.0 \\\n    --hash=sha256:ab\npython-dateutil==2.9.0\n".into() };
        let declared = Declared::new(&requirements, Some(&lock));
        for module in ["pandas", "yaml", "numpy", "dateutil.parser"] {
            assert!(declared.provides(module), "{module}");
        }
        assert!(!declared.provides("scipy"));
    }

    #[test]
    fn errors_span_their_line_in_the_requirements() {
        let (_, diagnostics) = read("numpy\n-r other.txt\n");
        assert_eq!(diagnostics.len(), 1);
        let diagnostic = &diagnostics[0];
        assert_eq!((diagnostic.line, diagnostic.column, diagnostic.end_column), (2, 1, 13));
        assert_eq!(diagnostic.file, SourceFile::Requirements);
        assert_eq!(diagnostic.severity, Severity::Error);
    }
}
