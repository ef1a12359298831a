//! What validation finds wrong in a connector's code.

use serde::{Deserialize, Serialize};

crate::words! {
    /// How bad a diagnostic is.
    pub enum Severity ("severity") {
        /// The code cannot run as it is: Start refuses it.
        Error = "error",
        /// The code runs, but something in it will be refused or fail when reached.
        Warning = "warning",
    }
}

crate::words! {
    /// Which of an app's texts a diagnostic is about.
    #[derive(Default)]
    pub enum SourceFile ("source file") {
        /// The Python module.
        #[default]
        Code = "code",
        /// The requirements (pip's format).
        Requirements = "requirements",
    }
}

/// One finding, at 1-based lines and columns (columns count UTF-16 units, as editors do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    pub severity: Severity,
    pub message: String,
    /// The text it is in: the code (older clients assume it) or the requirements.
    #[serde(default)]
    pub file: SourceFile,
    /// On a topic the team may not read: the topic, which an administrator can grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grantable_topic: Option<String>,
}
