//! Build script: with feature `cli`, puts the official `socketcluster-client` browser bundle
//! (pinned in `demo/package-lock.json`) where the `socketcluster` program embeds it. The bundle
//! comes from `demo/node_modules` when `npm ci --prefix demo` was run (as `.ci/run` does), else
//! from an `npm ci` of the same lock file inside `OUT_DIR` (nothing is written to the source
//! tree). Without npm the program is built with a stub, says so in a build warning, and serves
//! a page explaining how to get the bundle.

use std::path::{Path, PathBuf};
use std::process::Command;

const BUNDLE: &str = "node_modules/socketcluster-client/socketcluster-client.min.js";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=demo/package-lock.json");
    println!("cargo:rerun-if-changed=demo/{BUNDLE}");
    if std::env::var_os("CARGO_FEATURE_CLI").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let target = out.join("socketcluster-client.min.js");
    let found = find_bundle(&out);
    let ok = match &found {
        Some(bundle) => std::fs::copy(bundle, &target).is_ok(),
        None => false,
    };
    if !ok {
        println!(
            "cargo:warning=the socketcluster-client browser bundle is missing (npm failed or is not \
             installed): the demo page will not connect. Run `npm ci --prefix demo` and build again."
        );
        let stub =
            "throw new Error('socketcluster-client bundle missing: run npm ci --prefix demo and rebuild');\n";
        let _ = std::fs::write(&target, stub);
    }
}

/// The bundle in `demo/node_modules`, or installed into `OUT_DIR` from the committed lock file.
fn find_bundle(out: &Path) -> Option<PathBuf> {
    let demo = Path::new("demo");
    let local = demo.join(BUNDLE);
    if local.exists() {
        return Some(local);
    }
    let dir = out.join("demo-npm");
    let installed = dir.join(BUNDLE);
    if installed.exists() {
        return Some(installed);
    }
    std::fs::create_dir_all(&dir).ok()?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(demo.join(file), dir.join(file)).ok()?;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&dir)
        .status()
        .ok()?;
    (status.success() && installed.exists()).then_some(installed)
}
