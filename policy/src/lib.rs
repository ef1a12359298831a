//! What connector code may do: the one list that the sandbox enforces (the connector's audit
//! hook) and that validation warns about before the code runs (the backend); and which Kafka
//! topics a team's connectors may read ([`topics`]).

pub mod topics;

/// Why the sandbox refuses something, as the user reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Network,
    Processes,
    Threads,
    Signals,
    ReadFiles,
    WriteFiles,
    NativeCode,
    CodeObjects,
}

impl Cause {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Network => "network access is not available to connectors",
            Self::Processes => "starting processes is not available to connectors",
            Self::Threads => {
                "threads are not available to connectors (streams and timers run one at a time)"
            }
            Self::Signals => "sending signals is not available to connectors",
            Self::ReadFiles => {
                "reading files is not available to connectors (only the standard library can be imported)"
            }
            Self::WriteFiles => "writing files is not available to connectors",
            Self::NativeCode => {
                "native code (ctypes and similar modules) is not available to connectors"
            }
            Self::CodeObjects => "building code objects is not available to connectors",
        }
    }
}

/// Modules whose import alone is refused: they exist to reach native code or start processes.
pub const REFUSED_IMPORTS: &[(&str, Cause)] = &[
    ("ctypes", Cause::NativeCode),
    ("_ctypes", Cause::NativeCode),
    ("_ctypes_test", Cause::NativeCode),
    ("cffi", Cause::NativeCode),
    ("_cffi_backend", Cause::NativeCode),
    ("_testcapi", Cause::NativeCode),
    ("_testinternalcapi", Cause::NativeCode),
    ("_testbuffer", Cause::NativeCode),
    ("_testclinic", Cause::NativeCode),
    ("_testimportmultiple", Cause::NativeCode),
    ("_testmultiphase", Cause::NativeCode),
    ("_xxtestfuzz", Cause::NativeCode),
    ("_xxsubinterpreters", Cause::NativeCode),
    ("_xxinterpchannels", Cause::NativeCode),
    ("_posixsubprocess", Cause::Processes),
    ("_posixshmem", Cause::WriteFiles),
    ("_multiprocessing", Cause::Processes),
];

/// Modules that import but whose purpose the sandbox refuses when used (their audit events are
/// refused): validation warns at the import.
pub const REFUSED_USES: &[(&str, Cause)] = &[
    ("socket", Cause::Network),
    ("ssl", Cause::Network),
    ("http.client", Cause::Network),
    ("urllib.request", Cause::Network),
    ("ftplib", Cause::Network),
    ("smtplib", Cause::Network),
    ("poplib", Cause::Network),
    ("imaplib", Cause::Network),
    ("nntplib", Cause::Network),
    ("telnetlib", Cause::Network),
    ("webbrowser", Cause::Network),
    ("subprocess", Cause::Processes),
    ("multiprocessing", Cause::Processes),
    ("pty", Cause::Processes),
    ("threading", Cause::Threads),
    ("_thread", Cause::Threads),
    ("concurrent.futures", Cause::Threads),
    ("signal", Cause::Signals),
];

/// Why importing `module` (dotted) is refused, if it is.
pub fn refused_import(module: &str) -> Option<Cause> {
    lookup(REFUSED_IMPORTS, module)
}

/// Why using `module` (dotted) would be refused, if it would.
pub fn refused_use(module: &str) -> Option<Cause> {
    lookup(REFUSED_USES, module)
}

/// A module or one of its submodules in `table`: `ctypes.util` is refused as `ctypes` is.
fn lookup(table: &[(&str, Cause)], module: &str) -> Option<Cause> {
    table
        .iter()
        .find(|(name, _)| {
            module == *name || module.strip_prefix(name).is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|(_, cause)| *cause)
}

/// Whether connectors can import `module` at all: their `sys.path` holds only the standard
/// library (and `aerogrid`).
pub fn importable(module: &str) -> bool {
    let top = module.split('.').next().unwrap_or(module);
    top == "aerogrid" || STANDARD_LIBRARY.binary_search(&top).is_ok()
}

/// CPython 3.11's `sys.stdlib_module_names`, sorted.
pub const STANDARD_LIBRARY: &[&str] = &[
    "__future__",
    "_abc",
    "_aix_support",
    "_ast",
    "_asyncio",
    "_bisect",
    "_blake2",
    "_bootsubprocess",
    "_bz2",
    "_codecs",
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "_collections",
    "_collections_abc",
    "_compat_pickle",
    "_compression",
    "_contextvars",
    "_crypt",
    "_csv",
    "_ctypes",
    "_curses",
    "_curses_panel",
    "_datetime",
    "_dbm",
    "_decimal",
    "_elementtree",
    "_frozen_importlib",
    "_frozen_importlib_external",
    "_functools",
    "_gdbm",
    "_hashlib",
    "_heapq",
    "_imp",
    "_io",
    "_json",
    "_locale",
    "_lsprof",
    "_lzma",
    "_markupbase",
    "_md5",
    "_msi",
    "_multibytecodec",
    "_multiprocessing",
    "_opcode",
    "_operator",
    "_osx_support",
    "_overlapped",
    "_pickle",
    "_posixshmem",
    "_posixsubprocess",
    "_py_abc",
    "_pydecimal",
    "_pyio",
    "_queue",
    "_random",
    "_scproxy",
    "_sha1",
    "_sha256",
    "_sha3",
    "_sha512",
    "_signal",
    "_sitebuiltins",
    "_socket",
    "_sqlite3",
    "_sre",
    "_ssl",
    "_stat",
    "_statistics",
    "_string",
    "_strptime",
    "_struct",
    "_symtable",
    "_thread",
    "_threading_local",
    "_tkinter",
    "_tokenize",
    "_tracemalloc",
    "_typing",
    "_uuid",
    "_warnings",
    "_weakref",
    "_weakrefset",
    "_winapi",
    "_zoneinfo",
    "abc",
    "aifc",
    "antigravity",
    "argparse",
    "array",
    "ast",
    "asynchat",
    "asyncio",
    "asyncore",
    "atexit",
    "audioop",
    "base64",
    "bdb",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "cProfile",
    "calendar",
    "cgi",
    "cgitb",
    "chunk",
    "cmath",
    "cmd",
    "code",
    "codecs",
    "codeop",
    "collections",
    "colorsys",
    "compileall",
    "concurrent",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "crypt",
    "csv",
    "ctypes",
    "curses",
    "dataclasses",
    "datetime",
    "dbm",
    "decimal",
    "difflib",
    "dis",
    "distutils",
    "doctest",
    "email",
    "encodings",
    "ensurepip",
    "enum",
    "errno",
    "faulthandler",
    "fcntl",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "genericpath",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "grp",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "idlelib",
    "imaplib",
    "imghdr",
    "imp",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "lib2to3",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "mailcap",
    "marshal",
    "math",
    "mimetypes",
    "mmap",
    "modulefinder",
    "msilib",
    "msvcrt",
    "multiprocessing",
    "netrc",
    "nis",
    "nntplib",
    "nt",
    "ntpath",
    "nturl2path",
    "numbers",
    "opcode",
    "operator",
    "optparse",
    "os",
    "ossaudiodev",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pipes",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "posix",
    "posixpath",
    "pprint",
    "profile",
    "pstats",
    "pty",
    "pwd",
    "py_compile",
    "pyclbr",
    "pydoc",
    "pydoc_data",
    "pyexpat",
    "queue",
    "quopri",
    "random",
    "re",
    "readline",
    "reprlib",
    "resource",
    "rlcompleter",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "site",
    "smtpd",
    "smtplib",
    "sndhdr",
    "socket",
    "socketserver",
    "spwd",
    "sqlite3",
    "sre_compile",
    "sre_constants",
    "sre_parse",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "sunau",
    "symtable",
    "sys",
    "sysconfig",
    "syslog",
    "tabnanny",
    "tarfile",
    "telnetlib",
    "tempfile",
    "termios",
    "textwrap",
    "this",
    "threading",
    "time",
    "timeit",
    "tkinter",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tracemalloc",
    "tty",
    "turtle",
    "turtledemo",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib",
    "uu",
    "uuid",
    "venv",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "winreg",
    "winsound",
    "wsgiref",
    "xdrlib",
    "xml",
    "xmlrpc",
    "zipapp",
    "zipfile",
    "zipimport",
    "zlib",
    "zoneinfo",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submodules_share_their_package_verdict() {
        assert_eq!(refused_import("ctypes.util"), Some(Cause::NativeCode));
        assert_eq!(refused_import("ctypesx"), None);
        assert_eq!(refused_use("urllib.request"), Some(Cause::Network));
        assert_eq!(refused_use("urllib.parse"), None);
    }

    #[test]
    fn every_cause_says_connectors() {
        for cause in [
            Cause::Network,
            Cause::Processes,
            Cause::Threads,
            Cause::Signals,
            Cause::ReadFiles,
            Cause::WriteFiles,
            Cause::NativeCode,
            Cause::CodeObjects,
        ] {
            assert!(cause.describe().contains("not available to connectors"), "{cause:?}");
        }
    }

    #[test]
    fn the_standard_library_is_importable_and_sorted() {
        assert!(STANDARD_LIBRARY.windows(2).all(|pair| pair[0] < pair[1]));
        for module in ["json", "collections.abc", "aerogrid", "zoneinfo", "decimal"] {
            assert!(importable(module), "{module}");
        }
        for module in ["requests", "numpy", "pandas.core"] {
            assert!(!importable(module), "{module}");
        }
    }
}
