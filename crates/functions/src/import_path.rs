//! The request's `url`: a Go import path, never a URL. `host/owner/name` names the
//! repository (cloned from `https://host/owner/name.git`, rewritten by the operator's
//! `[git.url_rewrite]`); further elements name a package directory inside it.

use std::collections::BTreeMap;

/// Longest import path accepted.
const MAX_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid url {path:?}: {reason}")]
pub struct ImportPathError {
    pub path: String,
    pub reason: String,
}

/// A validated import path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImportPath {
    /// The whole path, e.g. `github.com/owner/name/sub/pkg`.
    pub full: String,
    /// The repository: the first three elements.
    pub repo: String,
    /// The package directory inside the repository ("" for its root).
    pub subdir: String,
}

impl ImportPath {
    pub fn parse(path: &str) -> Result<ImportPath, ImportPathError> {
        let bad =
            |reason: &str| Err(ImportPathError { path: path.chars().take(MAX_LEN).collect(), reason: reason.into() });
        if path.is_empty() {
            return bad("empty");
        }
        if path.len() > MAX_LEN {
            return bad("too long");
        }
        if path.contains("://") || path.split('/').next().is_some_and(|host| host.contains(':')) {
            return bad("give an import path such as github.com/owner/name, not a URL with a scheme or port");
        }
        if path.contains('@') {
            return bad("credentials are not allowed");
        }
        if path.starts_with('/') {
            return bad("must not start with '/'");
        }
        if let Some(c) = path.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~/".contains(*c))) {
            return bad(&format!("character {c:?} is not allowed (letters, digits and -._~/ only)"));
        }
        let elements: Vec<&str> = path.split('/').collect();
        for element in &elements {
            match *element {
                "" => return bad("empty path element"),
                "." | ".." => return bad("'.' and '..' elements are not allowed"),
                e if e.starts_with('.') || e.ends_with('.') => {
                    return bad("path elements must not begin or end with '.'");
                }
                e if e.starts_with('-') => return bad("path elements must not begin with '-'"),
                _ => {}
            }
        }
        if elements.len() < 3 {
            return bad("must name a repository as host/owner/name");
        }
        if !elements[0].contains('.') {
            return bad("the first element must be a host name such as github.com");
        }
        if !skyisland_config::valid_host_name(elements[0]) {
            return bad("the first element must be a host name: labels of letters, digits and '-' between dots");
        }
        Ok(ImportPath { full: path.to_owned(), repo: elements[..3].join("/"), subdir: elements[3..].join("/") })
    }

    /// The repository's host.
    pub fn host(&self) -> &str {
        self.repo.split('/').next().unwrap_or_default()
    }

    /// Whether the host is an IP address (in any of the forms C libraries accept: `127.1`,
    /// `0x7f.0.0.1`) or a name for this machine (`localhost`): such paths are refused
    /// unless the operator lists the host.
    pub fn host_is_local(&self) -> bool {
        let host = self.host().to_ascii_lowercase();
        let numeric = host.split('.').all(|label| {
            let hex = label.strip_prefix("0x");
            match hex {
                Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
                None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
            }
        });
        numeric || host == "localhost" || host.ends_with(".localhost") || host == "localhost.localdomain"
    }

    /// `https://<repo>.git`, rewritten by the longest matching prefix of `rewrites`.
    pub fn clone_url(&self, rewrites: &BTreeMap<String, String>) -> String {
        rewrite(&format!("https://{}.git", self.repo), rewrites)
    }
}

/// Applies the longest matching prefix rewrite, like git's `url.<base>.insteadOf`.
pub fn rewrite(url: &str, rewrites: &BTreeMap<String, String>) -> String {
    rewrites
        .iter()
        .filter(|(from, _)| url.starts_with(from.as_str()))
        .max_by_key(|(from, _)| from.len())
        .map_or_else(|| url.to_owned(), |(from, to)| format!("{to}{}", &url[from.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths() {
        let p = ImportPath::parse("github.com/mmcloughlin/geohash").unwrap();
        assert_eq!((p.repo.as_str(), p.subdir.as_str()), ("github.com/mmcloughlin/geohash", ""));
        let p = ImportPath::parse("example.test/o/repo/sub/pkg_v2").unwrap();
        assert_eq!((p.repo.as_str(), p.subdir.as_str()), ("example.test/o/repo", "sub/pkg_v2"));
    }

    #[test]
    fn bad_paths() {
        for (path, why) in [
            ("", "empty"),
            ("https://github.com/a/b", "scheme"),
            ("github.com:22/a/b", "scheme or port"),
            ("user:pw@github.com/a/b", "scheme or port"),
            ("user@github.com/a/b", "credentials"),
            ("/etc/passwd", "must not start with '/'"),
            ("github.com/a/../b", "'..'"),
            ("github.com/a/./b", "'.'"),
            ("github.com//a/b", "empty path element"),
            ("github.com/a/b/", "empty path element"),
            ("github.com/a/b\0", "not allowed"),
            ("github.com/a/b c", "not allowed"),
            ("github.com/a/b;rm", "not allowed"),
            ("gіthub.com/a/b", "not allowed"),
            ("github.com/a/-b", "begin with '-'"),
            ("github.com/a/.git", "begin or end"),
            ("github.com/a", "host/owner/name"),
            ("localhost/a/b", "host name"),
            ("github.com/a/b%2e%2e", "not allowed"),
            ("0.._/_/a", "host name"),
            ("git_hub.com/a/b", "host name"),
            ("-x.com/a/b", "begin with '-'"),
            ("x-.com/a/b", "host name"),
        ] {
            let e = ImportPath::parse(path).expect_err(path).to_string();
            assert!(e.contains(why), "{path:?}: {e}");
        }
        assert!(ImportPath::parse(&"a.b/".repeat(100)).unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn local_hosts_are_recognised() {
        for host in
            ["127.0.0.1", "127.1", "0x7f.0.0.1", "10.0.0.1", "0177.0.0.1", "a.localhost", "localhost.localdomain"]
        {
            assert!(ImportPath::parse(&format!("{host}/a/b")).unwrap().host_is_local(), "{host}");
        }
        for host in ["github.com", "1x.example", "0xbad.example.com", "example.0x"] {
            assert!(!ImportPath::parse(&format!("{host}/a/b")).unwrap().host_is_local(), "{host}");
        }
        assert_eq!(ImportPath::parse("GitHub.com/a/b").unwrap().host(), "GitHub.com");
    }

    #[test]
    fn longest_prefix_wins() {
        let rewrites = BTreeMap::from([
            ("https://github.com/".to_owned(), "file:///srv/git/github.com/".to_owned()),
            ("https://github.com/special/".to_owned(), "file:///srv/special/".to_owned()),
        ]);
        let url = |p: &str| ImportPath::parse(p).unwrap().clone_url(&rewrites);
        assert_eq!(url("github.com/a/b"), "file:///srv/git/github.com/a/b.git");
        assert_eq!(url("github.com/special/b/sub"), "file:///srv/special/b.git");
        assert_eq!(url("gitlab.com/a/b"), "https://gitlab.com/a/b.git");
    }
}
