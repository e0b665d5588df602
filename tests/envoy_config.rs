//! docs/envoy.yaml against Envoy's own protobuf definitions. Envoy cannot
//! run here, so the file is parsed as Envoy parses it: YAML, then the
//! protobuf JSON mapping into `envoy.config.bootstrap.v3.Bootstrap`, with
//! every `typed_config` resolved to its message. An unknown field, a
//! misspelt enum value or a wrong type anywhere fails.
//!
//! The definitions are the data-plane-api sources that the envoy-types
//! crate (which keyscope's gRPC door is built on) ships, compiled by
//! protox, a protobuf compiler in Rust.

use std::path::PathBuf;

use prost_reflect::{DescriptorPool, DynamicMessage, Value as ProtoValue};

/// The `proto/` directory of the envoy-types crate this workspace uses.
///
/// Asked of cargo, offline, for the host platform only: the packages of
/// that resolve are exactly those the build of these tests fetched, so the
/// answer never depends on what else the local cargo cache happens to hold.
/// (Without `--filter-platform`, cargo resolves every platform's packages,
/// and a fresh machine's cache lacks, say, Android's.)
fn envoy_protos() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(&workspace)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|package| package["name"] == "envoy-types")
        .expect("envoy-types is a dependency")["manifest_path"]
        .as_str()
        .unwrap()
        .to_owned();
    PathBuf::from(manifest).parent().unwrap().join("proto")
}

/// The host's target triple, as the toolchain that built this test says.
fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn pool() -> DescriptorPool {
    let root = envoy_protos();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|dir| root.join(dir))
    .collect();
    let files = [
        "envoy/config/bootstrap/v3/bootstrap.proto",
        "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
        "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
        "envoy/extensions/filters/http/router/v3/router.proto",
        "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    ];
    let set = protox::compile(files, &includes).unwrap();
    DescriptorPool::from_file_descriptor_set(set).unwrap()
}

fn bootstrap(pool: &DescriptorPool, yaml: &str) -> Result<DynamicMessage, String> {
    let descriptor = pool
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .unwrap();
    let value: serde_json::Value = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
    DynamicMessage::deserialize(descriptor, value).map_err(|e| e.to_string())
}

/// The message inside an `Any`.
fn unpack(pool: &DescriptorPool, any: &ProtoValue) -> DynamicMessage {
    let any = any.as_message().unwrap();
    let url = any.get_field_by_name("type_url").unwrap();
    let name = url.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let bytes = any.get_field_by_name("value").unwrap();
    let descriptor = pool.get_message_by_name(&name).unwrap();
    DynamicMessage::decode(descriptor, bytes.as_bytes().unwrap().clone()).unwrap()
}

fn field(message: &DynamicMessage, path: &[&str]) -> ProtoValue {
    let mut value = ProtoValue::Message(message.clone());
    for name in path {
        let next = match &value {
            ProtoValue::Message(m) => m.get_field_by_name(name).unwrap().into_owned(),
            ProtoValue::List(items) => items[name.parse::<usize>().unwrap()].clone(),
            other => panic!("{name}: not a message: {other:?}"),
        };
        value = next;
    }
    value
}

#[test]
fn the_documented_envoy_configuration_is_a_valid_bootstrap_failing_closed() {
    let pool = pool();
    let yaml = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/envoy.yaml"),
    )
    .unwrap();
    let config = bootstrap(&pool, &yaml).unwrap();

    // The ext_authz filter: gRPC to the keyscope cluster, failing closed.
    let manager = unpack(
        &pool,
        &field(
            &config,
            &[
                "static_resources",
                "listeners",
                "0",
                "filter_chains",
                "0",
                "filters",
                "0",
                "typed_config",
            ],
        ),
    );
    let filter = field(&manager, &["http_filters", "0"]);
    let filter = filter.as_message().unwrap();
    assert_eq!(
        filter.get_field_by_name("name").unwrap().as_str(),
        Some("envoy.filters.http.ext_authz")
    );
    let ext_authz = unpack(&pool, &filter.get_field_by_name("typed_config").unwrap());
    assert_eq!(
        ext_authz
            .get_field_by_name("failure_mode_allow")
            .unwrap()
            .as_bool(),
        Some(false)
    );
    let cluster = field(&ext_authz, &["grpc_service", "envoy_grpc", "cluster_name"]);
    assert_eq!(cluster.as_str(), Some("keyscope"));
    // The router comes last, after the check.
    let last = field(&manager, &["http_filters", "1", "name"]);
    assert_eq!(last.as_str(), Some("envoy.filters.http.router"));

    // The keyscope cluster speaks HTTP/2 (gRPC).
    let cluster = field(&config, &["static_resources", "clusters", "0"]);
    let cluster = cluster.as_message().unwrap();
    assert_eq!(
        cluster.get_field_by_name("name").unwrap().as_str(),
        Some("keyscope")
    );
    let options = cluster
        .get_field_by_name("typed_extension_protocol_options")
        .unwrap();
    let options = options.as_map().unwrap();
    let http = options.values().next().unwrap();
    let http = unpack(&pool, http);
    assert!(http.has_field_by_name("explicit_http_config"));
}

#[test]
fn a_misspelt_field_or_enum_in_the_configuration_is_caught() {
    let pool = pool();
    let yaml = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/envoy.yaml"),
    )
    .unwrap();
    for (from, to) in [
        ("failure_mode_allow:", "failure_mode_alow:"),
        ("transport_api_version: V3", "transport_api_version: V4"),
        ("ext_authz.v3.ExtAuthz", "ext_authz.v3.ExtAuth"),
        ("port_value: 9191", "port_value: nine"),
    ] {
        assert!(yaml.contains(from), "{from}");
        let error = bootstrap(&pool, &yaml.replace(from, to)).unwrap_err();
        eprintln!("{to}: {error}");
    }
}
