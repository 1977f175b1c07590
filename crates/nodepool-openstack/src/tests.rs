//! Unit tests of what the driver reads and decides without a cloud: error classification,
//! error messages, JSON shapes and the cloud configuration. The driver's behaviour against a
//! real OpenStack is tested in `tests/cloud.rs`.

use std::time::Duration;

use nodepool_config::{Environment, OpenStackSettings, Project, Secret};
use nodepool_provider::{AddressKind, ErrorKind, ImageStatus, ServerStatus};
use reqwest::StatusCode;
use serde_json::json;

use crate::http::{classify, cloud_message};
use crate::{auth, wire};

#[test]
fn status_codes_become_error_kinds() {
    let kind =
        |code: u16, message: &str| classify(StatusCode::from_u16(code).unwrap(), message, None);
    assert_eq!(
        kind(404, "Instance could not be found."),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(401, "The request you have made requires authentication."),
        ErrorKind::Auth
    );
    assert_eq!(
        kind(
            403,
            "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
        ),
        ErrorKind::QuotaExceeded
    );
    assert_eq!(
        kind(
            403,
            "Policy doesn't allow os_compute_api:servers:create to be performed."
        ),
        ErrorKind::Auth
    );
    assert_eq!(
        kind(413, "Quota exceeded for cores"),
        ErrorKind::QuotaExceeded
    );
    assert_eq!(
        classify(
            StatusCode::TOO_MANY_REQUESTS,
            "slow down",
            Some(Duration::from_secs(7))
        ),
        ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        kind(400, "Invalid flavorRef provided."),
        ErrorKind::BadRequest
    );
    assert_eq!(
        kind(
            409,
            "Cannot 'createImage' instance while it is in task_state deleting"
        ),
        ErrorKind::BadRequest
    );
    assert_eq!(kind(503, "Service Unavailable"), ErrorKind::Transient);
    assert_eq!(kind(302, ""), ErrorKind::Fatal);
}

#[test]
fn the_clouds_own_message_is_kept() {
    assert_eq!(
        cloud_message(
            r#"{"itemNotFound": {"message": "Instance 42 could not be found.", "code": 404}}"#
        )
        .as_deref(),
        Some("Instance 42 could not be found.")
    );
    assert_eq!(
        cloud_message(r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network x could not be found.", "detail": ""}}"#).as_deref(),
        Some("Network x could not be found.")
    );
    assert_eq!(
        cloud_message(r#"{"message": "flat"}"#).as_deref(),
        Some("flat")
    );
    assert_eq!(
        cloud_message("<html>\n  <body>415 Unsupported Media Type</body>\n</html>").as_deref(),
        Some("<html> <body>415 Unsupported Media Type</body> </html>")
    );
    assert_eq!(cloud_message("   "), None);
    assert_eq!(cloud_message(&"x".repeat(2000)).unwrap().len(), 500);
}

#[test]
fn servers_are_read_leniently() {
    let body = json!({"server": {
        "id": "9f1c", "name": "ubuntu-cloud1-7", "status": "ACTIVE",
        "OS-EXT-STS:task_state": null,
        "addresses": {"private": [
            {"addr": "127.10.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
            {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"},
            {"addr": "not an address", "version": 4}
        ]},
        "metadata": {"nodepool-node-id": "7"},
        "image": {"id": "img-1", "links": []},
        "flavor": {"id": "2"},
        "OS-EXT-AZ:availability_zone": "nova",
        "unknown": {"nested": true}
    }});
    let server = serde_json::from_value::<wire::ServerBody>(body)
        .unwrap()
        .server
        .into_server();
    assert_eq!(server.status, ServerStatus::Active);
    assert_eq!(server.addresses.len(), 2);
    assert_eq!(server.addresses[1].kind, AddressKind::Floating);
    assert_eq!(server.public_ip(), Some("203.0.113.9".parse().unwrap()));
    assert_eq!(server.metadata["nodepool-node-id"], "7");
    assert_eq!(server.image.as_ref().map(|i| i.as_str()), Some("img-1"));
    assert_eq!(server.flavor.as_deref(), Some("2"));
    assert_eq!(server.availability_zone.as_deref(), Some("nova"));

    let failed = json!({"server": {"id": "a", "status": "ERROR", "fault": {"message": "No valid host was found.", "code": 500}, "image": ""}});
    let failed = serde_json::from_value::<wire::ServerBody>(failed)
        .unwrap()
        .server
        .into_server();
    assert_eq!(
        (failed.status, failed.fault.as_deref(), failed.image),
        (ServerStatus::Error, Some("No valid host was found."), None)
    );
    let deleting =
        json!({"server": {"id": "b", "status": "ACTIVE", "OS-EXT-STS:task_state": "deleting"}});
    let deleting = serde_json::from_value::<wire::ServerBody>(deleting)
        .unwrap()
        .server
        .into_server();
    assert_eq!(deleting.status, ServerStatus::Deleting);

    // A listing of changes shows servers deleted since, with when they changed.
    let gone =
        json!({"server": {"id": "c", "status": "DELETED", "updated": "2026-11-25T21:12:31Z"}});
    let gone = serde_json::from_value::<wire::ServerBody>(gone)
        .unwrap()
        .server
        .into_server();
    assert_eq!(gone.status, ServerStatus::Deleted);
    assert_eq!(
        gone.updated.map(|at| at.to_string()),
        Some("2026-11-25T21:12:31Z".to_owned())
    );
    assert_eq!(
        wire::cloud_time("2026-11-25T21:12:31.250000"),
        wire::cloud_time("2026-11-25T21:12:31.25Z")
    );
    assert_eq!(wire::cloud_time("yesterday"), None);
}

#[test]
fn images_in_any_status_keep_their_properties() {
    let image = |status: &str| {
        let object = json!({
            "id": "i1", "name": "snap", "status": status, "visibility": "private",
            "nodepool-image-id": "12", "min_ram": 0, "tags": [], "self": "/v2/images/i1"
        });
        wire::image_from_json(object.as_object().unwrap().clone()).unwrap()
    };
    assert_eq!(image("active").status, ImageStatus::Active);
    assert_eq!(image("uploading").status, ImageStatus::Pending);
    assert_eq!(image("importing").status, ImageStatus::Pending);
    assert_eq!(image("killed").status, ImageStatus::Failed);
    assert_eq!(image("pending_delete").status, ImageStatus::Deleted);
    assert_eq!(
        image("deactivated").status,
        ImageStatus::Other("deactivated".into())
    );
    let properties = image("active").properties;
    assert_eq!(
        properties.get("nodepool-image-id").map(String::as_str),
        Some("12")
    );
    assert_eq!(
        properties.get("visibility").map(String::as_str),
        Some("private")
    );
    assert!(!properties.contains_key("min_ram") && !properties.contains_key("self"));
    assert!(wire::image_from_json(json!({"name": "no id"}).as_object().unwrap().clone()).is_none());
}

#[test]
fn floating_ips_map_to_servers_through_ports_and_keep_their_tags() {
    let body: wire::FloatingIpsBody = serde_json::from_value(json!({"floatingips": [
        {"id": "f1", "floating_ip_address": "172.24.4.10", "port_id": "p1",
         "description": "nodepool-installation=abc nodepool-node-id=7 nodepool-provider=rax dfw",
         "status": "DOWN", "router_id": "r1"},
        {"id": "f2", "floating_ip_address": "172.24.4.11", "port_id": null, "description": ""},
        {"id": "f3", "floating_ip_address": "not an address"}
    ]}))
    .unwrap();
    let ports: Vec<wire::WirePort> = serde_json::from_value(json!([
        {"id": "p1", "device_id": "server-1"}, {"id": "p2", "device_id": ""}
    ]))
    .unwrap();
    let ips: Vec<_> = body
        .floatingips
        .into_iter()
        .filter_map(|ip| ip.into_floating_ip(&ports))
        .collect();
    assert_eq!(ips.len(), 2, "an unreadable address is skipped");
    assert_eq!(ips[0].server.as_ref().map(|s| s.as_str()), Some("server-1"));
    assert_eq!(ips[0].metadata["nodepool-provider"], "rax dfw");
    assert_eq!(ips[0].metadata["nodepool-node-id"], "7");
    assert_eq!(ips[1].server, None);
    assert!(ips[1].metadata.is_empty());
}

#[test]
fn limits_treat_minus_one_as_unlimited() {
    let body = json!({"limits": {"absolute": {
        "maxTotalInstances": 2, "totalInstancesUsed": 1,
        "maxTotalCores": -1, "totalCoresUsed": 3,
        "maxTotalRAMSize": 51200, "totalRAMUsed": 4096
    }, "rate": []}});
    let limits = serde_json::from_value::<wire::LimitsBody>(body)
        .unwrap()
        .into_limits();
    assert_eq!(limits.instances.available(), Some(1));
    assert_eq!((limits.cores.max, limits.cores.used), (None, 3));
    assert_eq!(limits.ram_mb.available(), Some(47104));
}

fn inline_settings() -> OpenStackSettings {
    let mut settings = OpenStackSettings::default();
    settings.auth_url = Some("http://127.0.0.1:5000/v3".into());
    settings.username = Some("nodepool".into());
    settings.password = Some(Secret::new("hunter2"));
    settings.project = Some(Project::Name("ci".into()));
    settings.region_name = Some("RegionOne".into());
    settings
}

#[test]
fn inline_credentials_use_the_default_domain() {
    let config = auth::cloud_config(&inline_settings(), &Environment::default()).unwrap();
    assert_eq!(
        config,
        json!({
            "auth": {
                "auth_url": "http://127.0.0.1:5000/v3", "username": "nodepool", "password": "hunter2",
                "project_name": "ci", "user_domain_name": "Default", "project_domain_name": "Default"
            },
            "region_name": "RegionOne"
        })
    );
    let _: osauth::CloudConfig = serde_json::from_value(config).unwrap();
}

#[test]
fn inline_domains_replace_the_default_by_name_or_by_id() {
    let mut settings = inline_settings();
    settings.user_domain = Some(nodepool_config::Domain::Id("default".into()));
    settings.project_domain = Some(nodepool_config::Domain::Name("ci-domain".into()));
    let config = auth::cloud_config(&settings, &Environment::default()).unwrap();
    assert_eq!(
        config["auth"],
        json!({
            "auth_url": "http://127.0.0.1:5000/v3", "username": "nodepool", "password": "hunter2",
            "project_name": "ci", "user_domain_id": "default", "project_domain_name": "ci-domain"
        })
    );
    let _: osauth::CloudConfig = serde_json::from_value(config).unwrap();
}

#[test]
fn clouds_yaml_entries_with_inline_overrides() {
    let dir = std::env::temp_dir().join(format!("nodepool-openstack-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clouds.yaml");
    std::fs::write(
        &file,
        "clouds:\n  east:\n    auth:\n      auth_url: https://keystone.east/v3\n      username: np\n      password: s3cret\n      project_name: ci\n      user_domain_name: Default\n    region_name: east-1\n",
    )
    .unwrap();
    let env = Environment {
        clouds_yaml: Some(file.clone()),
        home: None,
        current_dir: None,
    };
    let mut settings = OpenStackSettings::default();
    settings.cloud = Some("east".into());
    settings.project = Some(Project::Id("0042".into()));
    let config = auth::cloud_config(&settings, &env).unwrap();
    assert_eq!(config["auth"]["auth_url"], "https://keystone.east/v3");
    assert_eq!(
        config["auth"]["project_id"], "0042",
        "the inline key overrides"
    );
    assert_eq!(config["region_name"], "east-1");
    settings.cloud = Some("west".into());
    let error = auth::cloud_config(&settings, &env).unwrap_err().0;
    assert_eq!(
        error,
        format!(
            "no cloud named \"west\" in {} (it has: east)",
            file.display()
        )
    );
    assert!(!error.contains("s3cret"));
    std::fs::write(&file, "clouds: [password: s3cret\n").unwrap();
    let error = auth::cloud_config(&settings, &env).unwrap_err().0;
    assert!(
        error.ends_with("is not a valid clouds.yaml") && !error.contains("s3cret"),
        "{error}"
    );
    // A password or id YAML reads as a number is the string it was written as.
    std::fs::write(
        &file,
        "clouds:\n  east:\n    auth:\n      auth_url: https://keystone.east/v3\n      username: np\n      password: 07654321\n      project_id: 0x42\n      user_domain_id: 1e3\n",
    )
    .unwrap();
    settings.cloud = Some("east".into());
    settings.project = None;
    let config = auth::cloud_config(&settings, &env).unwrap();
    assert_eq!(
        (
            &config["auth"]["password"],
            &config["auth"]["project_id"],
            &config["auth"]["user_domain_id"]
        ),
        (&json!("07654321"), &json!("0x42"), &json!("1e3"))
    );
    let _: osauth::CloudConfig = serde_json::from_value(config).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
