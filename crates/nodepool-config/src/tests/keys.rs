//! Every key of the format is read, and every default of 2014 is filled in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{MINIMAL, load};
use crate::{
    BaseImage, DbUri, Driver, ImageSource, Network, OpenStackSettings, Project, Secret, defaults,
};

#[test]
fn defaults_are_the_2014_ones() {
    let loaded = load(MINIMAL);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = &loaded.config;
    assert_eq!(config.script_dir, None);
    assert_eq!(
        config.dburi,
        DbUri::Sqlite(PathBuf::from("/var/lib/nodepool/nodepool.sqlite"))
    );
    assert_eq!(config.cron.image_update.as_str(), "14 2 * * *");
    assert_eq!(config.cron.cleanup.as_str(), "* * * * *");
    assert_eq!(config.cron.check.as_str(), "*/15 * * * *");

    let label = &config.labels[0];
    assert_eq!(label.min_ready, 2);
    assert_eq!(label.subnodes, 0);
    assert_eq!(label.ready_script, None);
    assert!(label.is_enabled());

    let provider = &config.providers[0];
    assert_eq!(provider.driver, Driver::Fake);
    assert_eq!(provider.rate, Duration::from_secs(1));
    assert_eq!(provider.boot_timeout, Duration::from_secs(60));
    assert_eq!(provider.launch_timeout, Duration::from_secs(3600));
    assert_eq!(provider.keypair, None);
    assert_eq!(provider.pool, None);
    assert!(provider.networks.is_empty() && provider.availability_zones.is_empty());
    assert_eq!(
        provider.template_hostname,
        "{image.name}-{timestamp}.template.openstack.org"
    );

    let image = &provider.images[0];
    assert_eq!(
        image.source,
        ImageSource::Snapshot(BaseImage::Name("Ubuntu 22.04".into()))
    );
    assert_eq!(image.min_ram, 2048);
    assert_eq!(image.name_filter, None);
    assert_eq!(image.setup, None);
    assert_eq!(image.username, "jenkins");
    assert_eq!(
        image.private_key,
        PathBuf::from("/var/lib/jenkins/.ssh/id_rsa")
    );
    assert_eq!(image.user_home, "/home/jenkins");
    assert_eq!(image.connection_port, 22);
    assert!(image.meta.is_empty());
    assert_eq!(defaults::SCRIPTS_ON_NODE, "/opt/nodepool-scripts");
}

const EVERY_KEY: &str = r#"
script-dir: /etc/nodepool/scripts
dburi: 'postgresql+psycopg2://nodepool:s3cret@db.example.org:5432/nodepool?sslmode=require'
cron:
  image-update: '0 3 * * 0'
  cleanup: '27 */6 * * *'
  check: '*/5 * * * *'
labels:
  - name: trusty
    image: trusty
    min-ready: 0
    providers:
      - name: cloud1
      - name: cloud2
    ready-script: ready.sh
    subnodes: 2
  - name: disabled
    image: trusty
    min-ready: -1
    providers: [cloud1]
providers:
  - name: cloud1
    username: nodepool
    password: 12345
    auth-url: https://keystone.example.org/v2.0/
    project-id: 0042
    service-type: compute
    service-name: cloudServersOpenStack
    region-name: DFW
    max-servers: '96'
    rate: '0.25'
    boot-timeout: 120
    launch-timeout: 900.5
    keypair: nodepool
    pool: public
    networks:
      - net-id: 8ab3f1c2-0000-4e6a-9c1b-3c0f6d7a1e55
      - net-label: private
      - name: other
    availability-zones: [az1, az2]
    template-hostname: 'tmpl-{image.name}-{provider.name}-{timestamp}.example.org'
    images:
      - name: trusty
        base-image: 8AB3F1C2-0000-4e6a-9c1b-3c0f6d7a1e55-suffix
        min-ram: 8192
        name-filter: Performance
        setup: prepare.sh
        username: ubuntu
        private-key: keys/id_rsa
        user-home: /home/ubuntu
        connection-port: 2222
        meta:
          purpose: ci
          count: 3
  - name: cloud2
    cloud: west
    project-name: ci
    region-name: RegionTwo
    max-servers: 0
    rate: 0
    images:
      - name: trusty
        base-image: Trusty
        min-ram: 0
"#;

#[test]
fn every_key_is_read() {
    let loaded = crate::parse(EVERY_KEY, "/etc/nodepool/nodepool.yaml").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = &loaded.config;
    assert_eq!(
        config.script_dir,
        Some(PathBuf::from("/etc/nodepool/scripts"))
    );
    let DbUri::Postgres(url) = &config.dburi else {
        panic!("{:?}", config.dburi)
    };
    assert_eq!(
        url.expose(),
        "postgres://nodepool:s3cret@db.example.org:5432/nodepool?sslmode=require"
    );
    assert_eq!(
        url.to_string(),
        "postgres://nodepool:***@db.example.org:5432/nodepool?sslmode=require"
    );
    assert_eq!(config.cron.image_update.as_str(), "0 3 * * 0");
    assert_eq!(config.cron.cleanup.as_str(), "27 */6 * * *");
    assert_eq!(config.cron.check.as_str(), "*/5 * * * *");

    let trusty = config.label("trusty").unwrap();
    assert_eq!(trusty.image.as_str(), "trusty");
    assert_eq!(trusty.min_ready, 0);
    assert!(trusty.is_enabled());
    let providers: Vec<&str> = trusty.providers.iter().map(|p| p.as_str()).collect();
    assert_eq!(providers, ["cloud1", "cloud2"]);
    assert_eq!(trusty.ready_script.as_deref(), Some("ready.sh"));
    assert_eq!(trusty.subnodes, 2);
    let disabled = config.label("disabled").unwrap();
    assert!(!disabled.is_enabled());
    assert_eq!(disabled.min_ready_count(), 0);

    let cloud1 = config.provider("cloud1").unwrap();
    assert_eq!(
        cloud1.driver,
        Driver::OpenStack(OpenStackSettings {
            cloud: None,
            auth_url: Some("https://keystone.example.org/v2.0/".into()),
            username: Some("nodepool".into()),
            password: Some(Secret::new("12345")),
            project: Some(Project::Id("0042".into())),
            region_name: Some("DFW".into()),
            service_type: Some("compute".into()),
            service_name: Some("cloudServersOpenStack".into()),
            user_domain: None,
            project_domain: None,
            api_timeout: None,
        })
    );
    assert_eq!(cloud1.max_servers, 96);
    assert_eq!(cloud1.rate, Duration::from_millis(250));
    assert_eq!(cloud1.boot_timeout, Duration::from_secs(120));
    assert_eq!(cloud1.launch_timeout, Duration::from_millis(900_500));
    assert_eq!(cloud1.keypair.as_deref(), Some("nodepool"));
    assert_eq!(cloud1.pool.as_deref(), Some("public"));
    assert_eq!(
        cloud1.networks,
        [
            Network::Id("8ab3f1c2-0000-4e6a-9c1b-3c0f6d7a1e55".into()),
            Network::Name("private".into()),
            Network::Name("other".into())
        ]
    );
    assert_eq!(cloud1.availability_zones, ["az1", "az2"]);
    assert_eq!(
        cloud1.template_hostname,
        "tmpl-{image.name}-{provider.name}-{timestamp}.example.org"
    );
    let image = cloud1.image("trusty").unwrap();
    assert_eq!(
        image.source,
        ImageSource::Snapshot(BaseImage::Id(
            "8AB3F1C2-0000-4e6a-9c1b-3c0f6d7a1e55-suffix".into()
        ))
    );
    assert_eq!(image.min_ram, 8192);
    assert_eq!(image.name_filter.as_deref(), Some("Performance"));
    assert_eq!(image.setup.as_deref(), Some("prepare.sh"));
    assert_eq!(image.username, "ubuntu");
    assert_eq!(
        image.private_key,
        PathBuf::from("/etc/nodepool/keys/id_rsa")
    );
    assert_eq!(image.user_home, "/home/ubuntu");
    assert_eq!(image.connection_port, 2222);
    let meta: BTreeMap<String, String> = [
        ("count".to_owned(), "3".to_owned()),
        ("purpose".to_owned(), "ci".to_owned()),
    ]
    .into();
    assert_eq!(image.meta, meta);

    let cloud2 = config.provider("cloud2").unwrap();
    let Driver::OpenStack(settings) = &cloud2.driver else {
        panic!()
    };
    assert_eq!(settings.cloud.as_deref(), Some("west"));
    assert_eq!(settings.project, Some(Project::Name("ci".into())));
    assert_eq!(settings.password, None);
    assert_eq!(cloud2.max_servers, 0);
    assert_eq!(cloud2.rate, Duration::ZERO);
    assert_eq!(cloud2.images[0].min_ram, 0);
}

#[test]
fn anchors_aliases_merge_keys_and_quoted_numbers() {
    let text = r#"
labels:
  - &label
    name: a
    image: ubuntu
    min-ready: "3"
    providers: &both
      - name: east
      - name: west
  - <<: *label
    name: b
    providers: *both
providers:
  - &provider
    name: east
    driver: fake
    max-servers: '10'
    rate: 0.5
    images: &images
      - name: ubuntu
        base-image: Ubuntu
        min-ram: "2048"
  - <<: *provider
    name: west
    max-servers: 20
  - <<: [*provider]
    name: north
    images: *images
"#;
    let config = load(text).config;
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["east", "west", "north"]);
    let servers: Vec<u32> = config.providers.iter().map(|p| p.max_servers).collect();
    assert_eq!(servers, [10, 20, 10]);
    assert!(
        config
            .providers
            .iter()
            .all(|p| p.rate == Duration::from_millis(500))
    );
    assert!(config.providers.iter().all(|p| p.images[0].min_ram == 2048));
    assert_eq!(config.labels[1].min_ready, 3);
    assert_eq!(config.labels[1].image.as_str(), "ubuntu");
    assert_eq!(config.labels[1].providers.len(), 2);
}

#[test]
fn errors_in_merged_values_point_at_their_definition() {
    let text = format!("{MINIMAL}  - <<: *p\n    name: cloud2\n").replace(
        "  - name: cloud1\n    driver: fake\n    max-servers: 10",
        "  - &p\n    name: cloud1\n    driver: fake\n    max-servers: lots",
    );
    let errors = super::errors(&text);
    let shown: Vec<String> = errors.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        [
            "nodepool.yaml:10:18: error: providers[0].max-servers: expected an integer, found \"lots\"",
            "nodepool.yaml:10:18: error: providers[1].max-servers: expected an integer, found \"lots\"",
        ]
    );
}

#[test]
fn legacy_keys_warn_once_each() {
    let text = format!(
        "{MINIMAL}targets:\n  - name: jenkins\n    jenkins: {{url: x, user: y, apikey: z}}\ngearman-servers:\n  - host: zuul\nzmq-publishers: [tcp://j:8888]\nelements-dir: /e\nimages-dir: /i\ndiskimages:\n  - name: d\n"
    );
    let loaded = load(&text);
    let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "targets",
            "gearman-servers",
            "zmq-publishers",
            "elements-dir",
            "images-dir",
            "diskimages"
        ]
    );
    assert!(loaded.warnings[0].message.starts_with("has no effect: "));
}

#[test]
fn fake_auth_url_selects_the_fake_driver() {
    let text = MINIMAL.replace(
        "    driver: fake\n",
        "    auth-url: fake\n    username: u\n    password: p\n    project-id: x\n",
    );
    let loaded = load(&text);
    assert_eq!(loaded.config.providers[0].driver, Driver::Fake);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].message.contains("prefer `driver: fake`"));
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let text = format!("script-dir: scripts\ndburi: sqlite://state/np.sqlite\n{MINIMAL}");
    let config = crate::parse(&text, "/srv/nodepool/nodepool.yaml")
        .unwrap()
        .config;
    assert_eq!(
        config.script_dir,
        Some(PathBuf::from("/srv/nodepool/scripts"))
    );
    assert_eq!(
        config.dburi,
        DbUri::Sqlite(PathBuf::from("/srv/nodepool/state/np.sqlite"))
    );
    let config = crate::parse(&text, "nodepool.yaml").unwrap().config;
    assert_eq!(config.script_dir, Some(PathBuf::from("scripts")));
}

#[test]
fn mysql_dburis_are_read_in_every_spelling() {
    for (uri, normal) in [
        (
            "mysql://nodepool@localhost/nodepool",
            "mysql://nodepool@localhost/nodepool",
        ),
        (
            "mysql+pymysql://np:pw@db/np?charset=utf8",
            "mysql://np:pw@db/np?charset=utf8",
        ),
        ("mysql+mysqldb://np@db:3307/np", "mysql://np@db:3307/np"),
        ("mariadb://np@db/np", "mysql://np@db/np"),
    ] {
        let loaded = load(&format!("dburi: '{uri}'\n{MINIMAL}"));
        let DbUri::Mysql(url) = &loaded.config.dburi else {
            panic!("{uri} read as {}", loaded.config.dburi);
        };
        assert_eq!(url.expose(), normal);
        assert!(loaded.warnings.is_empty(), "{uri}: {:?}", loaded.warnings);
        assert!(!loaded.config.dburi.to_string().contains("pw"));
        assert_eq!(loaded.origins.get("dburi").map(|l| l.line), Some(1));
    }
}

#[test]
fn a_bom_and_windows_line_endings_are_fine() {
    let text = format!("\u{feff}{}", MINIMAL.replace('\n', "\r\n"));
    let loaded = crate::parse_bytes(text.as_bytes(), "nodepool.yaml").unwrap();
    assert_eq!(loaded.config.providers[0].max_servers, 10);
}

#[test]
fn api_defaults_to_loopback_and_reads_every_key() {
    let api = &load(MINIMAL).config.api;
    assert_eq!(api.listen.to_string(), "127.0.0.1:8005");
    assert_eq!(api.token_file, None);
    assert_eq!(api.request_timeout, Duration::from_secs(3600));
    assert_eq!(api.rate, 100);

    let text = format!(
        "{MINIMAL}api:\n  listen: 0.0.0.0:9000\n  token-file: /etc/nodepool/api-token\n  request-timeout: 90.5\n  rate: 20\n"
    );
    let api = &load(&text).config.api;
    assert_eq!(api.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(
        api.token_file.as_deref(),
        Some(std::path::Path::new("/etc/nodepool/api-token"))
    );
    assert_eq!(api.request_timeout, Duration::from_millis(90_500));
    assert_eq!(api.rate, 20);
}

#[test]
fn keystone_v3_domains_are_read_by_name_or_by_id() {
    let openstack = |extra: &str| {
        let text = MINIMAL.replace(
            "    driver: fake\n",
            &format!(
                "    auth-url: https://keystone.example.org/v3\n    username: ci\n    password: s3cret\n    project-name: ci\n{extra}"
            ),
        );
        match &load(&text).config.providers[0].driver {
            Driver::OpenStack(settings) => settings.clone(),
            Driver::Fake => panic!("an OpenStack provider"),
        }
    };
    let none = openstack("");
    assert_eq!((&none.user_domain, &none.project_domain), (&None, &None));
    let given = openstack(
        "    user-domain-id: default\n    project-domain-name: Engineering\n    identity-api-version: 3\n    api-timeout: 30\n",
    );
    assert_eq!(given.api_timeout, Some(Duration::from_secs(30)));
    assert_eq!(none.api_timeout, None);
    assert_eq!(given.user_domain, Some(crate::Domain::Id("default".into())));
    assert_eq!(
        given.project_domain,
        Some(crate::Domain::Name("Engineering".into()))
    );
}

#[test]
fn a_transitional_0_4_file_with_zookeeper_next_to_targets_runs() {
    let text = format!(
        "zookeeper-servers:\n  - host: zk1.example.org\n    port: 2181\ntargets:\n  - name: jenkins1\n{MINIMAL}"
    );
    let loaded = load(&text);
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, ["zookeeper-servers", "targets"]);
    assert!(
        loaded.warnings[0]
            .message
            .contains("its own store (`dburi`)"),
        "{:?}",
        loaded.warnings[0]
    );
}
