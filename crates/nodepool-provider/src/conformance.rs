//! The conformance suite: what every [`Provider`] implementation must do, checked the same
//! way against the fake cloud and against a real OpenStack.
//!
//! A [`Harness`] supplies the provider, what to boot, and how to let time pass (moving a
//! virtual clock, or really waiting). [`run`] runs every check and, at the end, asserts that
//! the cloud holds nothing the suite created.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nodepool_model::{ExternalId, ImageId, InstallationId, NodeId};

use crate::{
    CloudImage, ErrorKind, ImageStatus, NetworkRef, Owner, Ownership, Provider, Server, ServerSpec,
    ServerStatus, Tags, classify, pick_flavor,
};

/// Lets time pass between two polls.
pub type Wait = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the suite needs to run against one provider.
pub struct Harness {
    /// The provider under test.
    pub provider: Arc<dyn Provider>,
    /// A provider on the same cloud whose project allows exactly two instances, if there is one.
    pub quota_of_two: Option<Arc<dyn Provider>>,
    /// The name of an active image to boot.
    pub base_image: String,
    /// The least RAM of the flavor to boot, in MB.
    pub min_ram: u64,
    /// How many polls before giving up on a server or image becoming active.
    pub patience: u32,
    /// Lets time pass between polls.
    pub wait: Wait,
    /// How many servers to create and list at once (more than one page of the cloud's listing).
    pub many: usize,
    /// The networks to boot servers on (none: the cloud's default).
    pub networks: Vec<NetworkRef>,
    /// A floating IP pool reachable from those networks, if the cloud has one.
    pub floating_pool: Option<String>,
    /// The installation id to tag with: unique per run, so that leftovers of other runs are
    /// never mistaken for this one's.
    pub installation: InstallationId,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

impl Harness {
    fn tags(&self, owner: Owner) -> BTreeMap<String, String> {
        Tags {
            installation: self.installation.clone(),
            provider: self.provider.name().clone(),
            owner,
        }
        .to_metadata()
    }

    async fn boot_spec(&self, name: &str, owner: Owner) -> ServerSpec {
        let provider = &self.provider;
        let images = provider.list_images().await.expect("list_images");
        let image = images
            .iter()
            .find(|i| i.name == self.base_image && i.status == ImageStatus::Active)
            .unwrap_or_else(|| panic!("no active image named {:?}", self.base_image));
        let flavors = provider.list_flavors().await.expect("list_flavors");
        let flavor = pick_flavor(&flavors, self.min_ram, None).expect("a flavor with enough RAM");
        let mut spec = ServerSpec::new(name, flavor.id.clone(), image.id.clone());
        spec.metadata = self.tags(owner);
        spec.networks = self.networks.clone();
        spec
    }

    async fn until_active(&self, id: &ExternalId) -> Server {
        for _ in 0..self.patience {
            let server = self.provider.get_server(id).await.expect("get_server");
            match server.status {
                ServerStatus::Active => return server,
                ServerStatus::Error => panic!("server {id} went ERROR: {:?}", server.fault),
                _ => (self.wait)().await,
            }
        }
        panic!("server {id} did not become ACTIVE");
    }

    /// Waits for an image to become active; `None` if the cloud dropped it (not found).
    async fn until_image_active(&self, id: &ExternalId) -> Option<CloudImage> {
        for _ in 0..self.patience {
            let image = match self.provider.get_image(id).await {
                Ok(image) => image,
                Err(error) if error.kind == ErrorKind::NotFound => return None,
                Err(error) => panic!("get_image: {error}"),
            };
            match image.status {
                ImageStatus::Active => return Some(image),
                ImageStatus::Failed | ImageStatus::Deleted => return None,
                _ => (self.wait)().await,
            }
        }
        panic!("image {id} did not become active");
    }

    async fn until_server_gone(&self, id: &ExternalId) {
        for _ in 0..self.patience {
            match self.provider.get_server(id).await {
                Err(error) if error.kind == ErrorKind::NotFound => {
                    let listed = self.provider.list_servers().await.expect("list_servers");
                    assert!(
                        !listed.iter().any(|s| &s.id == id),
                        "server {id} is gone but still listed"
                    );
                    return;
                }
                Ok(_) => (self.wait)().await,
                Err(error) => panic!("get_server of a deleted server: {error}"),
            }
        }
        panic!("server {id} was not deleted");
    }

    fn ours(&self, metadata: &BTreeMap<String, String>) -> bool {
        matches!(
            classify(metadata, &self.installation),
            Ownership::Ours { .. } | Ownership::OursUnreadable
        )
    }
}

/// Runs every check, then asserts that nothing the suite created is left in the cloud.
pub async fn run(h: &Harness) {
    server_lifecycle(h).await;
    changes_since(h).await;
    snapshot_lifecycle(h).await;
    floating_ips(h).await;
    not_found_is_not_found(h).await;
    flavors(h).await;
    many_at_once(h).await;
    quota(h).await;
    nothing_left(h).await;
}

/// create → ACTIVE → listed with our tags → delete → gone.
pub async fn server_lifecycle(h: &Harness) {
    let spec = h
        .boot_spec("conformance-lifecycle", Owner::Node(NodeId::new(1)))
        .await;
    let created = h
        .provider
        .create_server(&spec)
        .await
        .expect("create_server");
    assert_eq!(created.name, "conformance-lifecycle");
    let active = h.until_active(&created.id).await;
    assert!(
        active.public_ip().is_some() || active.private_ip().is_some(),
        "an active server has an address: {active:?}"
    );
    let listed = h.provider.list_servers().await.expect("list_servers");
    let mine = listed
        .iter()
        .find(|s| s.id == created.id)
        .expect("the new server is listed");
    assert_eq!(
        classify(&mine.metadata, &h.installation),
        Ownership::Ours {
            provider: h.provider.name().to_string(),
            owner: Owner::Node(NodeId::new(1))
        }
    );
    h.provider
        .delete_server(&created.id)
        .await
        .expect("delete_server");
    h.until_server_gone(&created.id).await;
}

/// A listing of the changes since a server was seen shows what changed after: a server
/// created since, and one deleted since (as `Deleted`), which a full listing no longer shows.
pub async fn changes_since(h: &Harness) {
    let boot = |name: &'static str, node: u64| async move {
        let spec = h.boot_spec(name, Owner::Node(NodeId::new(node))).await;
        let created = h
            .provider
            .create_server(&spec)
            .await
            .expect("create_server");
        h.until_active(&created.id).await
    };
    let first = boot("conformance-changes-1", 2).await;
    let since = first.updated.expect("a server says when it last changed");
    let second = boot("conformance-changes-2", 3).await;
    h.provider
        .delete_server(&first.id)
        .await
        .expect("delete_server");
    h.until_server_gone(&first.id).await;

    let changed = h
        .provider
        .list_servers_changed(since)
        .await
        .expect("list_servers_changed");
    let status = |id: &ExternalId| {
        changed
            .iter()
            .find(|s| &s.id == id)
            .map(|s| s.status.clone())
    };
    assert_eq!(status(&first.id), Some(ServerStatus::Deleted));
    assert_eq!(status(&second.id), Some(ServerStatus::Active));
    assert!(
        changed
            .iter()
            .filter_map(|s| s.updated)
            .all(|at| at >= since),
        "only servers changed since {since} are listed: {changed:?}"
    );
    h.provider
        .delete_server(&second.id)
        .await
        .expect("delete_server");
    h.until_server_gone(&second.id).await;
}

/// snapshot → image active → listed with its properties → delete → gone.
pub async fn snapshot_lifecycle(h: &Harness) {
    let spec = h
        .boot_spec("conformance-template", Owner::Image(ImageId::new(2)))
        .await;
    let template = h
        .provider
        .create_server(&spec)
        .await
        .expect("create_server");
    h.until_active(&template.id).await;
    let tags = h.tags(Owner::Image(ImageId::new(2)));
    // A cloud may drop a snapshot it could not take (Nova does when the server, ACTIVE a
    // moment ago, has not reported its power state yet); a caller takes another.
    let mut snapshot = None;
    for _ in 0..h.patience {
        match h
            .provider
            .create_image(&template.id, "conformance-snapshot", &tags)
            .await
        {
            Ok(id) => {
                if let Some(image) = h.until_image_active(&id).await {
                    snapshot = Some((id, image));
                    break;
                }
            }
            // The server is still busy with the dropped attempt.
            Err(error) if error.kind == ErrorKind::BadRequest => {}
            Err(error) => panic!("create_image: {error}"),
        }
        (h.wait)().await;
    }
    let (id, image) = snapshot.expect("a snapshot became active");
    assert_eq!(image.name, "conformance-snapshot");
    let listed = h.provider.list_images().await.expect("list_images");
    let mine = listed
        .iter()
        .find(|i| i.id == id)
        .expect("the snapshot is listed");
    assert_eq!(
        classify(&mine.properties, &h.installation),
        Ownership::Ours {
            provider: h.provider.name().to_string(),
            owner: Owner::Image(ImageId::new(2))
        }
    );
    h.provider.delete_image(&id).await.expect("delete_image");
    let gone = h.provider.get_image(&id).await;
    assert!(
        matches!(&gone, Err(e) if e.kind == ErrorKind::NotFound)
            || matches!(&gone, Ok(i) if i.status == ImageStatus::Deleted),
        "a deleted image is gone: {gone:?}"
    );
    assert!(
        !h.provider
            .list_images()
            .await
            .expect("list_images")
            .iter()
            .any(|i| i.id == id && i.status != ImageStatus::Deleted)
    );
    h.provider
        .delete_server(&template.id)
        .await
        .expect("delete_server");
    h.until_server_gone(&template.id).await;
}

/// A floating IP from the pool is mapped onto a server, listed with our tags, unmapped when
/// the server goes, and given back.
pub async fn floating_ips(h: &Harness) {
    let Some(pool) = &h.floating_pool else {
        return;
    };
    let owner = Owner::Node(NodeId::new(3));
    let spec = h.boot_spec("conformance-floating", owner).await;
    let server = h
        .provider
        .create_server(&spec)
        .await
        .expect("create_server");
    let active = h.until_active(&server.id).await;
    let ip = h
        .provider
        .create_floating_ip(&server.id, pool, &h.tags(owner))
        .await
        .expect("create_floating_ip");
    assert_eq!(ip.server.as_ref(), Some(&server.id));
    assert!(
        active.addresses.iter().all(|a| a.ip != ip.ip),
        "a new address, not one the server had: {ip:?}"
    );
    let listed = h
        .provider
        .list_floating_ips()
        .await
        .expect("list_floating_ips");
    let mine = listed
        .iter()
        .find(|i| i.id == ip.id)
        .expect("the floating IP is listed");
    assert_eq!((mine.ip, mine.server.as_ref()), (ip.ip, Some(&server.id)));
    assert_eq!(
        classify(&mine.metadata, &h.installation),
        Ownership::Ours {
            provider: h.provider.name().to_string(),
            owner
        }
    );
    let unknown = h
        .provider
        .create_floating_ip(&server.id, "conformance-no-such-pool", &h.tags(owner))
        .await
        .expect_err("an unknown pool is an error");
    assert_eq!(unknown.kind, ErrorKind::NotFound, "{unknown}");
    h.provider
        .delete_server(&server.id)
        .await
        .expect("delete_server");
    h.until_server_gone(&server.id).await;
    let listed = h
        .provider
        .list_floating_ips()
        .await
        .expect("list_floating_ips");
    let left = listed
        .iter()
        .find(|i| i.id == ip.id)
        .expect("a floating IP outlives its server");
    assert_eq!(left.server, None, "unmapped when its server is gone");
    h.provider
        .delete_floating_ip(&ip.id)
        .await
        .expect("delete_floating_ip");
    let listed = h
        .provider
        .list_floating_ips()
        .await
        .expect("list_floating_ips");
    assert!(!listed.iter().any(|i| i.id == ip.id));
    let again = h
        .provider
        .delete_floating_ip(&ip.id)
        .await
        .expect_err("a floating IP is deleted once");
    assert_eq!(again.kind, ErrorKind::NotFound, "{again}");
}

/// Operations on an id that does not exist fail as not found.
pub async fn not_found_is_not_found(h: &Harness) {
    let missing = ExternalId::new("00000000-0000-4000-8000-0000deadbeef");
    let kind = |r: crate::Result<()>| r.expect_err("an unknown id is an error").kind;
    assert_eq!(
        kind(h.provider.get_server(&missing).await.map(drop)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(h.provider.delete_server(&missing).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(h.provider.get_image(&missing).await.map(drop)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(h.provider.delete_image(&missing).await),
        ErrorKind::NotFound
    );
}

/// Flavors are listed, and the smallest one with enough RAM is picked.
pub async fn flavors(h: &Harness) {
    let flavors = h.provider.list_flavors().await.expect("list_flavors");
    assert!(!flavors.is_empty());
    let picked = pick_flavor(&flavors, h.min_ram, None).expect("a flavor with enough RAM");
    assert!(picked.ram_mb >= h.min_ram);
    assert!(
        flavors
            .iter()
            .filter(|f| f.ram_mb >= h.min_ram)
            .all(|f| f.ram_mb >= picked.ram_mb)
    );
    assert!(pick_flavor(&flavors, u64::MAX, None).is_none());
    assert!(pick_flavor(&flavors, 0, Some("no-flavor-has-this-in-its-name")).is_none());
}

/// Many concurrent creates and deletes; the listing returns all of them.
pub async fn many_at_once(h: &Harness) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..h.many {
        let spec = h
            .boot_spec(
                &format!("conformance-many-{i}"),
                Owner::Node(NodeId::new(100 + i as u64)),
            )
            .await;
        let provider = h.provider.clone();
        tasks.spawn(async move { provider.create_server(&spec).await.expect("create_server") });
    }
    let mut ids = Vec::new();
    while let Some(server) = tasks.join_next().await {
        ids.push(server.expect("the create task ran").id);
    }
    // Listed once they are all ACTIVE: while Nova is still scheduling servers, a paginated
    // listing can skip one (its marker moves from a build request into a cell), so only
    // settled servers are promised. (The daemon never judges a server still being launched
    // by a listing.)
    for id in &ids {
        h.until_active(id).await;
    }
    let listed = h.provider.list_servers().await.expect("list_servers");
    for id in &ids {
        assert!(
            listed.iter().any(|s| &s.id == id),
            "server {id} is listed among {} servers",
            listed.len()
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let provider = h.provider.clone();
        tasks.spawn(async move { provider.delete_server(&id).await.expect("delete_server") });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("the delete task ran");
    }
    for id in &ids {
        h.until_server_gone(id).await;
    }
}

/// The third server of a project allowed two is refused as a quota error. The project is
/// the suite's own: servers left in it by an interrupted run are deleted first.
pub async fn quota(h: &Harness) {
    let Some(provider) = &h.quota_of_two else {
        return;
    };
    let tiny = Harness {
        provider: provider.clone(),
        quota_of_two: None,
        wait: Box::new(|| Box::pin(async {})),
        installation: h.installation.clone(),
        base_image: h.base_image.clone(),
        networks: h.networks.clone(),
        floating_pool: None,
        ..*h
    };
    for leftover in provider.list_servers().await.expect("list_servers") {
        provider
            .delete_server(&leftover.id)
            .await
            .expect("delete_server");
        h.until_server_gone_on(provider.as_ref(), &leftover.id)
            .await;
    }
    let mut ids = Vec::new();
    for i in 0..2 {
        let spec = tiny
            .boot_spec(
                &format!("conformance-quota-{i}"),
                Owner::Node(NodeId::new(200 + i)),
            )
            .await;
        ids.push(
            provider
                .create_server(&spec)
                .await
                .expect("the first two servers fit")
                .id,
        );
    }
    for id in &ids {
        h.until_active_on(provider.as_ref(), id).await;
    }
    let spec = tiny
        .boot_spec("conformance-quota-2", Owner::Node(NodeId::new(202)))
        .await;
    let third = provider.create_server(&spec).await;
    if let Ok(server) = &third {
        ids.push(server.id.clone());
    }
    for id in &ids {
        provider.delete_server(id).await.expect("delete_server");
    }
    for id in &ids {
        h.until_server_gone_on(provider.as_ref(), id).await;
    }
    let error = third.expect_err("the third server is over quota");
    assert_eq!(error.kind, ErrorKind::QuotaExceeded, "{error}");
}

impl Harness {
    async fn until_active_on(&self, provider: &dyn Provider, id: &ExternalId) {
        for _ in 0..self.patience {
            match provider.get_server(id).await.expect("get_server").status {
                ServerStatus::Active => return,
                ServerStatus::Error => panic!("server {id} went ERROR"),
                _ => (self.wait)().await,
            }
        }
        panic!("server {id} did not become ACTIVE");
    }

    async fn until_server_gone_on(&self, provider: &dyn Provider, id: &ExternalId) {
        for _ in 0..self.patience {
            match provider.get_server(id).await {
                Err(error) if error.kind == ErrorKind::NotFound => return,
                _ => (self.wait)().await,
            }
        }
        panic!("server {id} was not deleted");
    }
}

/// Nothing tagged with this run's installation id is left.
pub async fn nothing_left(h: &Harness) {
    let servers = h.provider.list_servers().await.expect("list_servers");
    let left: Vec<_> = servers
        .iter()
        .filter(|s| h.ours(&s.metadata))
        .map(|s| &s.id)
        .collect();
    assert!(left.is_empty(), "servers left behind: {left:?}");
    let images = h.provider.list_images().await.expect("list_images");
    let left: Vec<_> = images
        .iter()
        .filter(|i| h.ours(&i.properties) && i.status != ImageStatus::Deleted)
        .map(|i| &i.id)
        .collect();
    assert!(left.is_empty(), "images left behind: {left:?}");
    let ips = h
        .provider
        .list_floating_ips()
        .await
        .expect("list_floating_ips");
    let left: Vec<_> = ips
        .iter()
        .filter(|i| h.ours(&i.metadata))
        .map(|i| i.ip)
        .collect();
    assert!(left.is_empty(), "floating IPs left behind: {left:?}");
}
