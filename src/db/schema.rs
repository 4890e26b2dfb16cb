//! Diesel table definitions, identical for PostgreSQL and SQLite (portable column
//! types: text ids, epoch-millisecond BigInt timestamps, JSON as Text).

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        plan -> Text,
        features -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        secret_hash -> Text,
        permissions -> Text,
        allowed_organizations -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        expires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    email_domains (id) {
        id -> Text,
        organization_id -> Text,
        domain -> Text,
        verified -> Bool,
        verification_token -> Text,
        created_at -> BigInt,
        verified_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    email_senders (id) {
        id -> Text,
        organization_id -> Text,
        email -> Text,
        display_name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    enrichments (organization_id, code) {
        organization_id -> Text,
        code -> Text,
        entity_type -> Text,
        active -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    enrichment_groups (organization_id, slug) {
        organization_id -> Text,
        slug -> Text,
        codes -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    entities (id) {
        id -> Text,
        organization_id -> Text,
        entity_type -> Text,
        tax_id -> Text,
        country -> Text,
        name -> Text,
        gender -> Nullable<Text>,
        external_id -> Nullable<Text>,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        registration_date -> Nullable<Text>,
        status -> Text,
        is_client -> Bool,
        nationality -> Nullable<Text>,
        risk_matrix_id -> Nullable<Text>,
        attributes -> Text,
        entity_data -> Text,
        enrichment_plan -> Nullable<Text>,
        skip_rules_execution -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        organization_id -> Text,
        kind -> Text,
        state -> Text,
        payload -> Text,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        request_id -> Nullable<Text>,
        dedupe_key -> Nullable<Text>,
        search_text -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_after -> BigInt,
        lease_id -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        cancel_requested -> Bool,
        rows_done -> BigInt,
        rows_total -> Nullable<BigInt>,
        bytes_done -> BigInt,
        version -> BigInt,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        updated_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        created_by -> Nullable<Text>,
    }
}

diesel::table! {
    usage_events (id) {
        id -> Text,
        organization_id -> Text,
        kind -> Text,
        quantity -> BigInt,
        job_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    mappings (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        kind -> Text,
        column_map -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    email_deliveries (job_id, recipient) {
        job_id -> Text,
        recipient -> Text,
        state -> Text,
        message_id -> Nullable<Text>,
        error -> Nullable<Text>,
        updated_at -> BigInt,
        sent_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    import_errors (job_id, line, seq) {
        job_id -> Text,
        line -> BigInt,
        seq -> Integer,
        severity -> Text,
        column_name -> Text,
        code -> Text,
        message -> Text,
        raw_value -> Text,
        raw_record -> Text,
    }
}

diesel::table! {
    queue_turns (organization_id) {
        organization_id -> Text,
        last_claimed_at -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        at -> BigInt,
        organization_id -> Text,
        principal -> Text,
        door -> Text,
        method -> Text,
        target_id -> Text,
        request_id -> Text,
        outcome -> Text,
        detail -> Text,
    }
}

diesel::table! {
    staged_uploads (id) {
        id -> Text,
        organization_id -> Text,
        object_key -> Text,
        file_name -> Text,
        size_bytes -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    audit_events,
    staged_uploads,
    email_deliveries,
    queue_turns,
    import_errors,
    organizations,
    api_keys,
    email_domains,
    email_senders,
    enrichments,
    enrichment_groups,
    entities,
    jobs,
    usage_events,
    mappings,
);
