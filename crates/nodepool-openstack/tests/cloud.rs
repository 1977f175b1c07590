//! The OpenStack driver against a real OpenStack: the local cloud of `cargo xtask cloud up`
//! (or another, through the usual `OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`,
//! `OS_PROJECT_NAME` and `OS_REGION_NAME`).
//!
//! Without a reachable cloud these tests say so and pass on a developer's machine; under
//! `CI=true` they fail.

#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{Environment, OpenStackSettings, Project, Secret};
use nodepool_model::{InstallationId, ProviderName};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::conformance::{self, Harness};
use nodepool_provider::{ErrorKind, ImageStatus, NetworkRef, Provider};
use serde_json::json;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn settings(project: &str) -> OpenStackSettings {
    let mut settings = OpenStackSettings::default();
    settings.auth_url = Some(env("OS_AUTH_URL", "http://127.0.0.1:5000/v3"));
    settings.username = Some(env("OS_USERNAME", "admin"));
    settings.password = Some(Secret::new(env("OS_PASSWORD", "admin")));
    settings.project = Some(Project::Name(project.to_owned()));
    settings.region_name = Some(env("OS_REGION_NAME", "RegionOne"));
    settings
}

/// The test cloud's admin provider, or `None` (after saying why) when there is none and this
/// is not CI.
async fn cloud(name: &str) -> Option<OpenStackProvider> {
    let project = env("OS_PROJECT_NAME", "admin");
    match OpenStackProvider::connect(
        name.parse().unwrap(),
        &settings(&project),
        &Environment::default(),
    )
    .await
    {
        Ok(provider) => Some(provider),
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the OpenStack tests need a cloud in CI (cargo xtask cloud up): {error}")
        }
        Err(error) => {
            eprintln!(
                "skipping an OpenStack test: no cloud ({error}); run `cargo xtask cloud up`, or set CI=true to fail"
            );
            None
        }
    }
}

/// A project allowed exactly two instances, with the admin user in it (as admin: Neutron's
/// policy lets only an admin delete ports on the shared network): made once, reused.
async fn quota_of_two(admin: &osauth::Session) -> OpenStackProvider {
    use osauth::services::{COMPUTE, GenericService, VersionSelector};
    const IDENTITY: GenericService = GenericService::new("identity", VersionSelector::Major(3));
    let name = "nodepool-quota-two";
    let found: serde_json::Value = admin
        .get(IDENTITY, &["projects"])
        .query(&[("name", name)])
        .fetch()
        .await
        .unwrap();
    let project_id = match found["projects"].as_array().and_then(|p| p.first()) {
        Some(project) => project["id"].as_str().unwrap().to_owned(),
        None => {
            let created: serde_json::Value = admin
                .post(IDENTITY, &["projects"])
                .json(&json!({"project": {"name": name, "domain_id": "default"}}))
                .fetch()
                .await
                .unwrap();
            created["project"]["id"].as_str().unwrap().to_owned()
        }
    };
    let user: serde_json::Value = admin
        .get(IDENTITY, &["users"])
        .query(&[("name", "admin")])
        .fetch()
        .await
        .unwrap();
    let user_id = user["users"][0]["id"].as_str().unwrap().to_owned();
    let roles: serde_json::Value = admin
        .get(IDENTITY, &["roles"])
        .query(&[("name", "admin")])
        .fetch()
        .await
        .unwrap();
    let role_id = roles["roles"][0]["id"].as_str().unwrap().to_owned();
    admin
        .put(
            IDENTITY,
            &[
                "projects",
                &project_id,
                "users",
                &user_id,
                "roles",
                &role_id,
            ],
        )
        .send()
        .await
        .unwrap();
    admin
        .put(COMPUTE, &["os-quota-sets", &project_id])
        .json(&json!({"quota_set": {"instances": 2, "cores": -1, "ram": -1}}))
        .send()
        .await
        .unwrap();
    OpenStackProvider::connect(
        "quota-two".parse().unwrap(),
        &settings(name),
        &Environment::default(),
    )
    .await
    .unwrap()
}

async fn admin_session() -> osauth::Session {
    let config = json!({"auth": {
        "auth_url": env("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
        "username": env("OS_USERNAME", "admin"), "password": env("OS_PASSWORD", "admin"),
        "project_name": env("OS_PROJECT_NAME", "admin"),
        "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": env("OS_REGION_NAME", "RegionOne")});
    serde_json::from_value::<osauth::CloudConfig>(config)
        .unwrap()
        .create_session()
        .await
        .unwrap()
}

/// Deletes what interrupted runs of the suite left (their installation ids start with
/// `conformance-`), so that leftovers never pile up in the test cloud.
async fn clear_leftovers(provider: &OpenStackProvider) {
    let leftover = |metadata: &std::collections::BTreeMap<String, String>| {
        metadata
            .get(nodepool_provider::INSTALLATION_KEY)
            .is_some_and(|id| id.starts_with("conformance-"))
    };
    for server in provider.list_servers().await.unwrap() {
        if leftover(&server.metadata) {
            provider.delete_server(&server.id).await.unwrap();
        }
    }
    for image in provider.list_images().await.unwrap() {
        if leftover(&image.properties) {
            provider.delete_image(&image.id).await.unwrap();
        }
    }
    for ip in provider.list_floating_ips().await.unwrap() {
        if leftover(&ip.metadata) {
            provider.delete_floating_ip(&ip.id).await.unwrap();
        }
    }
}

fn run_id() -> InstallationId {
    InstallationId::new(format!(
        "conformance-{}-{}",
        std::process::id(),
        env("HOSTNAME", "local")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_passes_the_conformance_suite() {
    let Some(provider) = cloud("local").await else {
        return;
    };
    clear_leftovers(&provider).await;
    let quota = quota_of_two(&admin_session().await).await;
    let harness = Harness {
        // A small page, so that listings of the 12 servers below go past one page.
        provider: Arc::new(provider.with_page_size(5)),
        quota_of_two: Some(Arc::new(quota)),
        base_image: "base-image".into(),
        min_ram: 64,
        patience: 120,
        wait: Box::new(|| Box::pin(tokio::time::sleep(Duration::from_millis(500)))),
        many: 12,
        networks: vec![NetworkRef::Name("private".into())],
        floating_pool: Some("public".into()),
        installation: run_id(),
    };
    conformance::run(&harness).await;
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_without_the_password() {
    let Some(_) = cloud("probe").await else {
        return;
    };
    let mut wrong = settings(&env("OS_PROJECT_NAME", "admin"));
    wrong.password = Some(Secret::new("not-the-password-1234"));
    let error =
        OpenStackProvider::connect("local".parse().unwrap(), &wrong, &Environment::default())
            .await
            .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Auth, "{error}");
    assert!(
        !error.to_string().contains("not-the-password-1234"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("local: connect: authentication failed: "),
        "{error}"
    );
}

/// Keystone v3 domains given inline, by id and by name, log in; a domain that does not
/// exist is an authentication error.
#[tokio::test]
async fn inline_keystone_v3_domains_log_in() {
    let Some(_) = cloud("probe").await else {
        return;
    };
    let mut by_id = settings(&env("OS_PROJECT_NAME", "admin"));
    by_id.user_domain = Some(nodepool_config::Domain::Id("default".into()));
    by_id.project_domain = Some(nodepool_config::Domain::Name("Default".into()));
    let provider =
        OpenStackProvider::connect("domains".parse().unwrap(), &by_id, &Environment::default())
            .await
            .expect("logs in with the domains given inline");
    assert!(provider.limits().await.is_ok());
    let mut elsewhere = by_id.clone();
    elsewhere.user_domain = Some(nodepool_config::Domain::Name("no-such-domain".into()));
    let error = OpenStackProvider::connect(
        "domains".parse().unwrap(),
        &elsewhere,
        &Environment::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Auth, "{error}");
}

#[tokio::test]
async fn an_unreachable_keystone_is_transient() {
    let mut unreachable = settings("admin");
    unreachable.auth_url = Some("http://127.0.0.1:1/v3".into());
    let error = OpenStackProvider::connect(
        "gone".parse().unwrap(),
        &unreachable,
        &Environment::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
}

#[tokio::test]
async fn an_image_being_uploaded_does_not_break_the_listing() {
    use osauth::services::IMAGE;
    let Some(provider) = cloud("local").await else {
        return;
    };
    let session = admin_session().await;
    let created: serde_json::Value = session
        .post(IMAGE, &["images"])
        .json(&json!({"name": "nodepool-test-uploading", "disk_format": "raw", "container_format": "bare"}))
        .fetch()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // Staging data moves the image to "uploading", where it stays until imported.
    session
        .put(IMAGE, &["images", &id, "stage"])
        .header("Content-Type", "application/octet-stream")
        .body(vec![0u8; 4096])
        .send()
        .await
        .unwrap();
    let images = provider.list_images().await.unwrap();
    let listed = images
        .iter()
        .find(|i| i.id.as_str() == id)
        .expect("the staged image is listed");
    assert_eq!(listed.status, ImageStatus::Pending);
    assert!(
        images
            .iter()
            .any(|i| i.name == "base-image" && i.status == ImageStatus::Active)
    );
    provider.delete_image(&listed.id).await.unwrap();
}

#[tokio::test]
async fn limits_and_flavors() {
    let Some(provider) = cloud("local").await else {
        return;
    };
    let limits = provider.limits().await.unwrap();
    assert_eq!(
        limits.instances.max, None,
        "the local cloud's admin project is unlimited"
    );
    let flavors = provider.list_flavors().await.unwrap();
    let names: Vec<&str> = flavors.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"m1.tiny") && names.contains(&"m1.small"),
        "{names:?}"
    );
    let _: &ProviderName = provider.name();
}

#[tokio::test]
async fn application_credentials_from_clouds_yaml_log_in() {
    use osauth::services::{GenericService, VersionSelector};
    const IDENTITY: GenericService = GenericService::new("identity", VersionSelector::Major(3));
    let Some(_) = cloud("probe").await else {
        return;
    };
    let admin = admin_session().await;
    let users: serde_json::Value = admin
        .get(IDENTITY, &["users"])
        .query(&[("name", "admin")])
        .fetch()
        .await
        .unwrap();
    let user_id = users["users"][0]["id"].as_str().unwrap().to_owned();
    let name = format!("nodepool-test-{}", std::process::id());
    let created: serde_json::Value = admin
        .post(IDENTITY, &["users", &user_id, "application_credentials"])
        .json(&json!({"application_credential": {"name": name}}))
        .fetch()
        .await
        .unwrap();
    let credential = &created["application_credential"];
    let (id, secret) = (
        credential["id"].as_str().unwrap(),
        credential["secret"].as_str().unwrap(),
    );

    let dir = std::env::temp_dir().join(format!("nodepool-appcred-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clouds = dir.join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  ci:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      application_credential_id: {id}\n      application_credential_secret: {secret}\n    region_name: {}\n",
            env("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
            env("OS_REGION_NAME", "RegionOne")
        ),
    )
    .unwrap();
    let mut settings = OpenStackSettings::default();
    settings.cloud = Some("ci".into());
    let environment = Environment {
        clouds_yaml: Some(clouds),
        home: None,
        current_dir: None,
    };
    let logged_in =
        OpenStackProvider::connect("appcred".parse().unwrap(), &settings, &environment).await;
    // Used before the credential is deleted: deleting it revokes its tokens.
    let flavors = match &logged_in {
        Ok(provider) => provider.list_flavors().await.map(|f| f.len()),
        Err(error) => Err(error.clone()),
    };
    admin
        .delete(
            IDENTITY,
            &["users", &user_id, "application_credentials", id],
        )
        .send()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(flavors.unwrap() > 0);
}
