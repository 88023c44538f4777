-- provstick store schema 1 (PostgreSQL): entries, sticks, machines, events,
-- maintained counters and the key ring. Times are Unix microseconds (UTC).

-- keyring holds the data key wrapped by the key-encryption key, and how that
-- key is derived. Its shape never changes: Open reads it before migrating.
CREATE TABLE keyring (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    kdf         TEXT    NOT NULL CHECK (kdf IN ('argon2id', 'keyfile')),
    salt        BYTEA,
    kdf_time    BIGINT NOT NULL DEFAULT 0,
    kdf_memory  BIGINT NOT NULL DEFAULT 0,
    kdf_threads BIGINT NOT NULL DEFAULT 0,
    wrapped_key BYTEA    NOT NULL,
    created_at  BIGINT  NOT NULL,
    rotated_at  BIGINT NOT NULL
);

CREATE TABLE sticks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label            TEXT    NOT NULL UNIQUE,
    recipe           TEXT    NOT NULL,
    profile          TEXT    NOT NULL,
    record_count     BIGINT NOT NULL CHECK (record_count > 0),
    unconsumed       BIGINT NOT NULL CHECK (unconsumed >= 0),
    created_at       BIGINT  NOT NULL,
    station          TEXT    NOT NULL,
    built_at         BIGINT,
    written_at       BIGINT,
    image_hash       TEXT,
    ledger_imported_at BIGINT
);

CREATE TABLE machines (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid               TEXT    NOT NULL UNIQUE,
    dmi_serial         TEXT    NOT NULL DEFAULT '',
    dmi_model          TEXT    NOT NULL DEFAULT '',
    dmi_vendor         TEXT    NOT NULL DEFAULT '',
    macs               TEXT    NOT NULL DEFAULT '',
    ek_hash            TEXT    NOT NULL DEFAULT '',
    amt_version        TEXT    NOT NULL DEFAULT '',
    control_mode       TEXT    NOT NULL DEFAULT '',
    provisioning_state TEXT    NOT NULL DEFAULT '',
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE entries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid         TEXT    NOT NULL UNIQUE,
    profile     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('free', 'allocated', 'consumed', 'hello-seen', 'provisioned', 'failed', 'void')),
    secrets     BYTEA    NOT NULL,
    stick_id    BIGINT REFERENCES sticks (id),
    record      BIGINT,
    machine_id  BIGINT REFERENCES machines (id),
    reason      TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    CHECK (state <> 'free' OR stick_id IS NULL),
    CHECK (state IN ('free', 'void') OR (stick_id IS NOT NULL AND record IS NOT NULL)),
    CHECK ((stick_id IS NULL) = (record IS NULL))
);
-- One entry per record of a stick (free entries stay out of the index).
CREATE UNIQUE INDEX entries_stick_record ON entries (stick_id, record) WHERE stick_id IS NOT NULL;
-- Allocation draws the oldest free entries of a profile.
CREATE INDEX entries_free ON entries (profile, id) WHERE state = 'free';

-- events is append-only: one row per state change, written in the same
-- transaction as the change. pid names the entry (PIDs are unique forever);
-- it is not a foreign key, which would cost a lookup per row on the bulk
-- inserts of generation and import (the tests check the pairing).
CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid        TEXT    NOT NULL,
    at         BIGINT  NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    station    TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    stick_id   BIGINT,
    record     BIGINT,
    machine_id BIGINT
);
CREATE INDEX events_pid ON events (pid, id);

-- pool_counts is maintained in the same transaction as every state change,
-- so that pool status never counts entries. No CHECK (n >= 0): an upsert
-- with a negative delta is checked before ON CONFLICT applies it.
CREATE TABLE pool_counts (
    profile TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    n       BIGINT  NOT NULL,
    PRIMARY KEY (profile, state)
);
