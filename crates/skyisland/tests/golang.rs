//! Go as real packages need it: several toolchains side by side (each module built by the
//! oldest one its go.mod allows), and module dependencies from a vendor directory or from
//! a module proxy the operator configures. Offline: the proxy is a file:// directory made
//! here.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{Repo, Sandbox, Server, root_or_skip, run};

/// The current Go that scripts/setup.sh installs beside Debian's.
const CURRENT: &str = "/opt/skyisland/toolchains/go1.27.3/go/bin/go";

fn require_current_go() {
    assert!(Path::new(CURRENT).is_file(), "{CURRENT} is missing: run scripts/setup.sh");
}

async fn call(server: &Server, repo: &str, call: &str) -> (u16, Value) {
    server.call(json!({"url": repo, "call": call})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_module_is_built_by_the_oldest_toolchain_it_allows() {
    if !root_or_skip("each_module_is_built_by_the_oldest_toolchain_it_allows") {
        return;
    }
    require_current_go();
    let mut sandbox = Sandbox::new();
    let modern = Repo::from_fixture(&sandbox, "acme", "modern", "modern");
    let url = modern.import_path.as_str();
    let old = format!("{url}/old");

    // Debian's Go alone: the module's `go 1.22` is refused before anything is built...
    sandbox.extra_config = "[go]\ntoolchains = []\n".into();
    let mut server = Server::start(&sandbox);
    let health = server.health().await;
    assert_eq!(health["toolchains"].as_array().unwrap().len(), 1, "{health}");
    let (status, body) = call(&server, url, "Smallest(3, 1, 2)").await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("needs Go 1.22 or later (go.mod: go 1.22)"), "{error}");
    assert!(error.contains("toolchains are go1.19"), "{error}");
    assert!(!server.log().contains("build example.test/acme/modern dispatcher"), "nothing was built");
    // ...while its module in old/ (go 1.18) is built by it.
    let (status, body) = call(&server, &old, "Toolchain()").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].as_str().unwrap().starts_with("go1.19"), "{body}");
    server.stop();

    // With the current Go too (the default), the module builds, with min, slices and range
    // over an integer; old/ stays with the oldest Go that allows it.
    sandbox.extra_config = String::new();
    let mut server = Server::start(&sandbox);
    for (function, answer) in
        [("Smallest(3, 1, 2)", "1"), ("Sorted(3, 1, 2)", "[1 2 3]"), ("Count(5)", "10"), ("Toolchain()", "go1.27.3")]
    {
        let (status, body) = call(&server, url, function).await;
        assert_eq!((status, body["data"].as_str()), (200, Some(answer)), "{function}: {body}");
    }
    let (_, body) = call(&server, &old, "Toolchain()").await;
    assert!(body["data"].as_str().unwrap().starts_with("go1.19"), "{body}");
    server.stop();

    // Back to Debian's alone: the toolchain chosen before is gone, so the module is refused
    // again (no binary of the other toolchain's is used).
    sandbox.extra_config = "[go]\ntoolchains = []\n".into();
    let mut server = Server::start(&sandbox);
    let (status, body) = call(&server, url, "Toolchain()").await;
    assert_eq!(status, 422, "{body}");
    server.stop();
    sandbox.assert_clean();
}

/// The dependency module the fixtures import.
const DEP: &str = "example.test/dep";
const DEP_GO: &str = "package dep\n\nimport \"fmt\"\n\n// Hello greets.\nfunc Hello(name string) string { return fmt.Sprintf(\"hello, %s\", name) }\n";

/// Lays down a GOPROXY directory (the protocol's files) holding `DEP` at `version`.
fn make_proxy(dir: &Path, version: &str) {
    let script = r#"
import json, os, sys, zipfile
root, module, version, source = sys.argv[1:5]
base = os.path.join(root, module, "@v")
os.makedirs(base, exist_ok=True)
gomod = "module %s\n\ngo 1.19\n" % module
with open(os.path.join(base, "list"), "a") as f:
    f.write(version + "\n")
with open(os.path.join(base, version + ".info"), "w") as f:
    json.dump({"Version": version, "Time": "2024-01-01T00:00:00Z"}, f)
with open(os.path.join(base, version + ".mod"), "w") as f:
    f.write(gomod)
with zipfile.ZipFile(os.path.join(base, version + ".zip"), "w") as z:
    z.writestr("%s@%s/go.mod" % (module, version), gomod)
    z.writestr("%s@%s/dep.go" % (module, version), source)
"#;
    run(Command::new("python3").args(["-c", script]).arg(dir).args([DEP, version, DEP_GO]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_come_from_vendor_or_from_the_operators_module_proxy() {
    if !root_or_skip("dependencies_come_from_vendor_or_from_the_operators_module_proxy") {
        return;
    }
    let mut sandbox = Sandbox::new();
    let proxy = sandbox.path().join("goproxy");
    make_proxy(&proxy, "v1.0.0");
    let usesdep = Repo::from_fixture(&sandbox, "acme", "usesdep", "usesdep");
    // The same package with its dependency vendored (by `go mod vendor`, from that proxy).
    let vendored = Repo::from_fixture(&sandbox, "acme", "vendored", "usesdep");
    let gomod = std::fs::read_to_string(vendored.work.join("go.mod")).unwrap();
    std::fs::write(vendored.work.join("go.mod"), gomod.replace("acme/usesdep", "acme/vendored")).unwrap();
    for args in [["mod", "tidy"], ["mod", "vendor"]] {
        run(Command::new("go")
            .args(args)
            .current_dir(&vendored.work)
            .env("GOPROXY", format!("file://{}", proxy.display()))
            .env("GOSUMDB", "off")
            .env("GOFLAGS", "-modcacherw")
            .env("GOMODCACHE", sandbox.path().join("host-modcache"))
            .env("GOTOOLCHAIN", "local"));
    }
    assert!(vendored.work.join("vendor/example.test/dep/dep.go").is_file());
    vendored.change("README", "vendored\n", "vendor the dependency");
    // One that needs a version the proxy does not have.
    let missing = Repo::from_fixture(&sandbox, "acme", "missing", "usesdep");
    missing.change("go.mod", &gomod.replace("acme/usesdep", "acme/missing").replace("v1.0.0", "v9.9.9"), "v9");

    // No proxy, no downloads: a vendor directory is all there is.
    let mut server = Server::start(&sandbox);
    let (status, body) = call(&server, &vendored.import_path, "Greet(\"vendor\")").await;
    assert_eq!((status, body["data"].as_str()), (200, Some("hello, vendor")), "{body}");
    let (status, body) = call(&server, &usesdep.import_path, "Greet(\"x\")").await;
    assert_eq!(status, 422, "{body}");
    let output = body["output"].as_str().unwrap();
    assert!(output.contains("go: downloading example.test/dep v1.0.0"), "go's own message: {body}");
    assert!(output.contains("no module proxy ([go] proxy)") && output.contains("go mod vendor"), "{body}");
    server.stop();

    // The operator's proxy: a file:// directory, bound read-only into the build jails.
    sandbox.extra_config = format!("[go]\nproxy = \"file://{}\"\n", proxy.display());
    let mut server = Server::start(&sandbox);
    let (status, body) = call(&server, &usesdep.import_path, "Greet(\"proxy\")").await;
    assert_eq!((status, body["data"].as_str()), (200, Some("hello, proxy")), "{body}");
    let cached = sandbox.data_dir().join("build/gomodcache/cache/download/example.test/dep/@v/v1.0.0.zip");
    assert!(cached.is_file(), "the download is in the module cache builds share");
    // A version the proxy lacks: 422 with go's message, which names no host path.
    let (status, body) = call(&server, &missing.import_path, "Greet(\"x\")").await;
    assert_eq!(status, 422, "{body}");
    let output = body["output"].as_str().unwrap();
    assert!(output.contains("v9.9.9"), "{body}");
    assert!(!output.contains(&sandbox.path().display().to_string()), "no host path: {output}");
    server.stop();
    sandbox.assert_clean();
}
