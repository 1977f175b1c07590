//! The tables, as diesel sees them. Kept by hand in step with `migrations/`; the store tests
//! read and write every column on every backend, so a mismatch fails them.

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    installation (singleton) {
        singleton -> BigInt,
        installation_id -> Text,
        created -> BigInt,
    }
}

diesel::table! {
    nodes (id) {
        id -> BigInt,
        provider -> Text,
        label -> Text,
        az -> Nullable<Text>,
        hostname -> Nullable<Text>,
        external_id -> Nullable<Text>,
        public_ip -> Nullable<Text>,
        private_ip -> Nullable<Text>,
        state -> Text,
        state_time -> BigInt,
        image_id -> Nullable<BigInt>,
        request_id -> Nullable<BigInt>,
        hold_reason -> Nullable<Text>,
        hold_by -> Nullable<Text>,
        created -> BigInt,
        host_keys -> Nullable<Text>,
    }
}

diesel::table! {
    images (id) {
        id -> BigInt,
        provider -> Text,
        name -> Text,
        version -> BigInt,
        hostname -> Nullable<Text>,
        external_id -> Nullable<Text>,
        server_external_id -> Nullable<Text>,
        state -> Text,
        state_time -> BigInt,
        build_request_id -> Nullable<BigInt>,
        created -> BigInt,
    }
}

diesel::table! {
    node_requests (id) {
        id -> BigInt,
        requestor -> Text,
        priority -> BigInt,
        state -> Text,
        state_time -> BigInt,
        failure -> Nullable<Text>,
        created -> BigInt,
    }
}

diesel::table! {
    request_labels (request_id, position) {
        request_id -> BigInt,
        position -> BigInt,
        label -> Text,
        node_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    build_requests (id) {
        id -> BigInt,
        provider -> Nullable<Text>,
        image -> Text,
        requested_by -> Text,
        state -> Text,
        state_time -> BigInt,
        failure -> Nullable<Text>,
        created -> BigInt,
    }
}

diesel::table! {
    events (subject_kind, subject_id, seq) {
        subject_kind -> Text,
        subject_id -> BigInt,
        seq -> BigInt,
        time -> BigInt,
        what -> Text,
        reason_code -> Text,
        reason -> Text,
        actor -> Text,
    }
}

diesel::table! {
    failures (id) {
        id -> BigInt,
        provider -> Text,
        attempt -> Text,
        subject -> Text,
        time -> BigInt,
        reason -> Text,
        kind -> Nullable<Text>,
    }
}

diesel::joinable!(request_labels -> node_requests (request_id));
diesel::allow_tables_to_appear_in_same_query!(
    nodes,
    images,
    node_requests,
    request_labels,
    daemons,
    work
);

diesel::table! {
    daemons (id) {
        id -> Text,
        host -> Text,
        pid -> BigInt,
        started -> BigInt,
        expires -> BigInt,
    }
}

diesel::table! {
    work (subject_kind, subject_id) {
        subject_kind -> Text,
        subject_id -> BigInt,
        daemon -> Text,
        since -> BigInt,
    }
}
