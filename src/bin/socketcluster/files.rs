//! Static files: the built-in demo (compiled in), or a folder (`--static DIR`). The official
//! browser client is always at `/socketcluster-client.min.js`, and our recovery helper at
//! `/socketcluster-recovery.mjs`, unless the folder has its own.
//!
//! Paths are checked before the file system sees them: percent-decoded, a segment that is `..`,
//! `.`, empty in the middle, or holds `\` or NUL is refused (403); what resolves outside the
//! folder through a symbolic link is refused too.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The official `socketcluster-client` browser bundle, from the pinned npm package (build.rs).
const CLIENT_BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socketcluster-client.min.js"));

/// `js/socketcluster-recovery.mjs`: recovery of missed publishes for the official client.
const RECOVERY_HELPER: &[u8] = include_bytes!("../../../js/socketcluster-recovery.mjs");

const DEMO: &[(&str, &[u8])] = &[
    ("/index.html", include_bytes!("../../../demo/index.html")),
    ("/app.js", include_bytes!("../../../demo/app.js")),
    ("/style.css", include_bytes!("../../../demo/style.css")),
];

/// Where static files come from.
#[derive(Debug)]
pub(crate) enum Files {
    /// The built-in demo; the page learns the WebSocket path from a `<meta>` tag.
    Demo {
        /// The SocketCluster path, put in `index.html`.
        sc_path: String,
    },
    /// A folder (canonical path).
    Dir(PathBuf),
}

/// A static file to send.
#[derive(Debug)]
pub(crate) struct File {
    pub(crate) body: Cow<'static, [u8]>,
    pub(crate) content_type: &'static str,
}

/// Why there is no file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// 404.
    NotFound,
    /// 403: the path tries to leave the folder.
    Forbidden,
}

impl Files {
    /// Checks that `dir` is a folder this process can list (for a clear message at startup).
    pub(crate) fn dir(dir: &Path) -> std::io::Result<Files> {
        let canonical = dir.canonicalize()?;
        std::fs::read_dir(&canonical)?;
        Ok(Files::Dir(canonical))
    }

    /// The file at URL path `path` (no query).
    pub(crate) fn get(&self, path: &str) -> Result<File, Miss> {
        let relative = clean(path)?;
        let relative = if relative.is_empty() || relative.ends_with('/') {
            format!("{relative}index.html")
        } else {
            relative
        };
        match self {
            Files::Demo { sc_path } => {
                let key = format!("/{relative}");
                match DEMO.iter().find(|(name, _)| *name == key) {
                    Some(("/index.html", body)) => {
                        let page = String::from_utf8_lossy(body).replace("{{SC_PATH}}", &escape(sc_path));
                        Ok(File { body: Cow::Owned(page.into_bytes()), content_type: content_type(&key) })
                    }
                    Some((_, body)) => {
                        Ok(File { body: Cow::Borrowed(body), content_type: content_type(&key) })
                    }
                    None => bundle(&relative),
                }
            }
            Files::Dir(root) => {
                let full = root.join(&relative);
                let full = match full.canonicalize() {
                    Ok(p) => p,
                    Err(_) => return bundle(&relative),
                };
                if !full.starts_with(root) {
                    return Err(Miss::Forbidden);
                }
                let full = if full.is_dir() { full.join("index.html") } else { full };
                match std::fs::read(&full) {
                    Ok(body) => Ok(File { body: Cow::Owned(body), content_type: content_type(&relative) }),
                    Err(_) => bundle(&relative),
                }
            }
        }
    }
}

/// The files served next to any folder: the client bundle and the recovery helper.
fn bundle(relative: &str) -> Result<File, Miss> {
    let body = match relative {
        "socketcluster-client.min.js" => CLIENT_BUNDLE,
        "socketcluster-recovery.mjs" => RECOVERY_HELPER,
        _ => return Err(Miss::NotFound),
    };
    Ok(File { body: Cow::Borrowed(body), content_type: content_type(relative) })
}

/// `path` percent-decoded and without its leading `/`, or `Forbidden` when a segment could
/// leave the folder.
fn clean(path: &str) -> Result<String, Miss> {
    let decoded = percent_decode(path).ok_or(Miss::Forbidden)?;
    let rest = decoded.strip_prefix('/').ok_or(Miss::Forbidden)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, s) in segments.iter().enumerate() {
        let bad = *s == ".." || *s == "." || s.contains(['\\', '\0']) || (s.is_empty() && i != last);
        if bad {
            return Err(Miss::Forbidden);
        }
    }
    Ok(rest.to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        let files = Files::Demo { sc_path: "/socketcluster/".into() };
        for path in
            ["/../Cargo.toml", "/a/../../x", "/%2e%2e/x", "/%2E%2E%2Fx", "/./x", "/a//b", "/a\\..\\b", "/%00"]
        {
            assert_eq!(files.get(path).err(), Some(Miss::Forbidden), "{path}");
        }
        assert!(files.get("/").is_ok());
        assert!(files.get("/socketcluster-client.min.js").is_ok());
        assert_eq!(files.get("/nope.txt").err(), Some(Miss::NotFound));
    }

    #[test]
    fn the_demo_page_names_the_websocket_path() {
        let files = Files::Demo { sc_path: "/ws/\"x".into() };
        let page = files.get("/index.html").map(|f| String::from_utf8_lossy(&f.body).into_owned());
        assert!(page.is_ok_and(|p| p.contains(r#"content="/ws/&quot;x""#)));
    }
}
