//! The admin commands that act on clouds, against the local OpenStack
//! (`cargo xtask cloud up`): `delete --now`, `image-delete`, `alien-list`,
//! `alien-image-list`.

use std::collections::BTreeMap;
use std::path::Path;

use nodepool_config::DbUri;
use nodepool_db::{NewImage, NewNode, Store};
use nodepool_model::{ImageId, InstallationId, NodeId, Reason, ReasonCode, Timestamp};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{
    ErrorKind, ImageStatus, Owner, Provider, ServerSpec, ServerStatus, Tags, pick_flavor,
};
use serde_json::Value;

use crate::support;

const PROVIDER: &str = "cli-cloud";

fn config(dir: &Path) -> String {
    format!(
        "script-dir: {dir}/scripts
dburi: sqlite://{dir}/nodepool.sqlite
labels:
  - name: small
    image: base
    min-ready: 0
    providers: [{{name: {PROVIDER}}}]
providers:
{provider}",
        dir = dir.display(),
        provider = support::cloud_provider(PROVIDER, dir, 22, "    max-servers: 4\n"),
    )
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    crate::nodepool_with(&dir.join("nodepool.yaml"), args)
}

fn tags(installation: &InstallationId, owner: Owner) -> BTreeMap<String, String> {
    Tags {
        installation: installation.clone(),
        provider: PROVIDER.parse().unwrap(),
        owner,
    }
    .to_metadata()
}

async fn boot(
    cloud: &OpenStackProvider,
    name: &str,
    metadata: BTreeMap<String, String>,
) -> ServerSpec {
    let images = cloud.list_images().await.unwrap();
    let image = images
        .iter()
        .find(|i| i.name == "base-image" && i.status == ImageStatus::Active)
        .expect("the local cloud's base-image");
    let flavors = cloud.list_flavors().await.unwrap();
    let flavor = pick_flavor(&flavors, 64, None).unwrap();
    let mut spec = ServerSpec::new(name, flavor.id.clone(), image.id.clone());
    spec.metadata = metadata;
    spec
}

async fn until_active(cloud: &OpenStackProvider, id: &nodepool_model::ExternalId) {
    for _ in 0..300 {
        if cloud.get_server(id).await.unwrap().status == ServerStatus::Active {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("server {id} not ACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_now_image_delete_and_aliens_against_the_local_cloud() {
    let Some(cloud) = support::local_cloud("the admin commands' cloud test").await else {
        return;
    };
    // Servers an interrupted run left (this test's are all named cli-...).
    for server in cloud.list_servers().await.unwrap() {
        if server.name.starts_with("cli-") {
            let _ = cloud.delete_server(&server.id).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nodepool.yaml"), config(dir.path())).unwrap();
    let uri = DbUri::Sqlite(dir.path().join("nodepool.sqlite"));
    let t0 = Timestamp::from_unix_seconds(1_399_957_200);
    let store = Store::open_and_migrate(&uri, "nodepoold", t0).unwrap();
    let ours = store.installation_id().unwrap();
    let why = Reason::new(ReasonCode::Demand, "made by the test");

    // A node whose server runs, and servers no row knows: one with our tags, one with
    // another installation's, one with none.
    let node = store
        .create_node(
            &NewNode::new(PROVIDER.parse().unwrap(), "small".parse().unwrap()),
            t0,
            &why,
        )
        .unwrap();
    let spec = boot(&cloud, "cli-node", tags(&ours, Owner::Node(node.id))).await;
    let server = cloud.create_server(&spec).await.unwrap();
    store.attach_node_server(node.id, &server.id, t0).unwrap();
    let leak = cloud
        .create_server(
            &boot(
                &cloud,
                "cli-leak",
                tags(&ours, Owner::Node(NodeId::new(999))),
            )
            .await,
        )
        .await
        .unwrap();
    let other = InstallationId::new("0123456789abcdef0123456789abcdef");
    let theirs = cloud
        .create_server(
            &boot(
                &cloud,
                "cli-theirs",
                tags(&other, Owner::Node(NodeId::new(1))),
            )
            .await,
        )
        .await
        .unwrap();
    let mine = cloud
        .create_server(&boot(&cloud, "cli-by-hand", BTreeMap::new()).await)
        .await
        .unwrap();
    until_active(&cloud, &server.id).await;

    let (code, stdout, stderr) = run(dir.path(), &["--json", "alien-list", PROVIDER]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let aliens: Value = serde_json::from_str(&stdout).unwrap();
    let owner_of = |id: &nodepool_model::ExternalId| {
        aliens
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["server_id"] == id.as_str())
            .map(|a| (a["tags"]["owner"].clone(), a["tags"]["node"].clone()))
    };
    assert_eq!(owner_of(&server.id), None, "a node's server is no alien");
    assert_eq!(owner_of(&leak.id), Some(("ours".into(), 999.into())));
    assert_eq!(owner_of(&theirs.id), Some(("other".into(), Value::Null)));
    assert_eq!(owner_of(&mine.id), Some(("none".into(), Value::Null)));
    let (_, table, _) = run(dir.path(), &["alien-list"]);
    assert!(table.contains(&format!("| {} ", theirs.id)), "{table}");
    assert!(
        table.contains("installation 0123456789abcdef0123456789abcdef"),
        "{table}"
    );

    // delete --now: the server is gone from the cloud when the command returns.
    let (code, stdout, stderr) = run(dir.path(), &["delete", "--now", &node.id.to_string()]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(
        stdout,
        format!("node {} deleted: server {} is gone\n", node.id, server.id)
    );
    let gone = cloud.get_server(&server.id).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);
    assert!(store.node(node.id).is_err());

    // A snapshot of a server no row knows is an alien image, tagged as ours; once an
    // upload row points at it, image-delete deletes it from the cloud.
    until_active(&cloud, &mine.id).await;
    let upload = store
        .create_image(
            &NewImage::new(PROVIDER.parse().unwrap(), "base".parse().unwrap(), t0),
            t0,
            &why,
        )
        .unwrap();
    let snapshot = cloud
        .create_image(
            &mine.id,
            "cli-snapshot",
            &tags(&ours, Owner::Image(upload.id)),
        )
        .await
        .unwrap();
    let (code, stdout, _) = run(dir.path(), &["--json", "alien-image-list"]);
    assert_eq!(code, 0);
    let images: Value = serde_json::from_str(&stdout).unwrap();
    let snap = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == snapshot.as_str())
        .unwrap_or_else(|| panic!("the snapshot is an alien image: {images}"));
    assert_eq!(snap["tags"]["image"], upload.id.get());
    store
        .attach_image_snapshot(upload.id, &snapshot, t0)
        .unwrap();
    // Nova drops an image whose server is deleted while the snapshot is taken: wait.
    for _ in 0..600 {
        let server = cloud.get_server(&mine.id).await.unwrap();
        let image = cloud.get_image(&snapshot).await.unwrap();
        if server.task.is_none() && image.status == ImageStatus::Active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (code, stdout, stderr) = run(dir.path(), &["image-delete", &upload.id.to_string()]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(
        cloud.get_image(&snapshot).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let _: ImageId = upload.id;

    for id in [&leak.id, &theirs.id, &mine.id] {
        let _ = cloud.delete_server(id).await;
    }
}
