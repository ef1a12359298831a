//! "Did you mean": the popular package closest to a name the index does not have. The index
//! cannot be asked for names like it (PyPI's simple API lists all 600,000), so the names users
//! reach for most are listed here.

use crate::normalize;

/// Packages data work reaches for most (PEP 503 normalized).
const POPULAR: &[&str] = &[
    "aiohttp",
    "altair",
    "anyio",
    "arrow",
    "attrs",
    "avro",
    "babel",
    "beautifulsoup4",
    "boto3",
    "botocore",
    "cachetools",
    "certifi",
    "cffi",
    "charset-normalizer",
    "click",
    "cryptography",
    "cython",
    "dask",
    "dataclasses-json",
    "dateparser",
    "decorator",
    "deprecated",
    "duckdb",
    "fastavro",
    "filelock",
    "flask",
    "fsspec",
    "google-cloud-bigquery",
    "google-cloud-storage",
    "greenlet",
    "grpcio",
    "h5py",
    "holidays",
    "httpx",
    "idna",
    "jinja2",
    "jmespath",
    "joblib",
    "jsonschema",
    "lightgbm",
    "lxml",
    "markupsafe",
    "matplotlib",
    "more-itertools",
    "msgpack",
    "multidict",
    "networkx",
    "nltk",
    "numba",
    "numexpr",
    "numpy",
    "openpyxl",
    "orjson",
    "packaging",
    "pandas",
    "pandas-ta",
    "pendulum",
    "pillow",
    "plotly",
    "polars",
    "protobuf",
    "psutil",
    "pyarrow",
    "pycryptodome",
    "pydantic",
    "pydantic-core",
    "pygments",
    "pyjwt",
    "pyparsing",
    "python-dateutil",
    "pytz",
    "pyyaml",
    "quantlib",
    "redis",
    "regex",
    "requests",
    "rich",
    "scikit-learn",
    "scipy",
    "seaborn",
    "simplejson",
    "six",
    "sortedcontainers",
    "sqlalchemy",
    "statsmodels",
    "sympy",
    "ta",
    "tabulate",
    "tenacity",
    "toolz",
    "tqdm",
    "typing-extensions",
    "tzdata",
    "tzlocal",
    "ujson",
    "urllib3",
    "xarray",
    "xgboost",
    "xlrd",
    "xlsxwriter",
    "yarl",
    "zstandard",
];

/// The popular package within two edits of `name`, if one is and `name` is not one itself.
pub(crate) fn did_you_mean(name: &str) -> Option<&'static str> {
    let wanted = normalize(name);
    if POPULAR.contains(&wanted.as_str()) {
        return None;
    }
    POPULAR
        .iter()
        .map(|known| (distance(&wanted, known), *known))
        .filter(|(edits, _)| *edits <= 2)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein's distance, in bytes (names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_not() {
        assert_eq!(did_you_mean("pandsa"), Some("pandas"));
        assert_eq!(did_you_mean("Numpyy"), Some("numpy"));
        assert_eq!(did_you_mean("scikit_learn"), None, "already a known package");
        assert_eq!(did_you_mean("sklearn"), None);
        assert_eq!(did_you_mean("aerogrid-no-such-package-x"), None);
    }
}
