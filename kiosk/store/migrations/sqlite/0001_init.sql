-- provstick store schema 1 (SQLite): entries, sticks, machines, events,
-- maintained counters and the key ring. Times are Unix microseconds (UTC).

-- keyring holds the data key wrapped by the key-encryption key, and how that
-- key is derived. Its shape never changes: Open reads it before migrating.
CREATE TABLE keyring (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    kdf         TEXT    NOT NULL CHECK (kdf IN ('argon2id', 'keyfile')),
    salt        BLOB,
    kdf_time    INTEGER NOT NULL DEFAULT 0,
    kdf_memory  INTEGER NOT NULL DEFAULT 0,
    kdf_threads INTEGER NOT NULL DEFAULT 0,
    wrapped_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER NOT NULL
);

CREATE TABLE sticks (
    id               INTEGER PRIMARY KEY,
    label            TEXT    NOT NULL UNIQUE,
    recipe           TEXT    NOT NULL,
    profile          TEXT    NOT NULL,
    record_count     INTEGER NOT NULL CHECK (record_count > 0),
    unconsumed       INTEGER NOT NULL CHECK (unconsumed >= 0),
    created_at       INTEGER NOT NULL,
    station          TEXT    NOT NULL,
    built_at         INTEGER,
    written_at       INTEGER,
    image_hash       TEXT,
    ledger_imported_at INTEGER
);

CREATE TABLE machines (
    id                 INTEGER PRIMARY KEY,
    uuid               TEXT    NOT NULL UNIQUE,
    dmi_serial         TEXT    NOT NULL DEFAULT '',
    dmi_model          TEXT    NOT NULL DEFAULT '',
    dmi_vendor         TEXT    NOT NULL DEFAULT '',
    macs               TEXT    NOT NULL DEFAULT '',
    ek_hash            TEXT    NOT NULL DEFAULT '',
    amt_version        TEXT    NOT NULL DEFAULT '',
    control_mode       TEXT    NOT NULL DEFAULT '',
    provisioning_state TEXT    NOT NULL DEFAULT '',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE entries (
    id          INTEGER PRIMARY KEY,
    pid         TEXT    NOT NULL UNIQUE,
    profile     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('free', 'allocated', 'consumed', 'hello-seen', 'provisioned', 'failed', 'void')),
    secrets     BLOB    NOT NULL,
    stick_id    INTEGER REFERENCES sticks (id),
    record      INTEGER,
    machine_id  INTEGER REFERENCES machines (id),
    reason      TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
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
    id         INTEGER PRIMARY KEY,
    pid        TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    station    TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    stick_id   INTEGER,
    record     INTEGER,
    machine_id INTEGER
);
CREATE INDEX events_pid ON events (pid, id);

-- pool_counts is maintained in the same transaction as every state change,
-- so that pool status never counts entries. No CHECK (n >= 0): an upsert
-- with a negative delta is checked before ON CONFLICT applies it.
CREATE TABLE pool_counts (
    profile TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (profile, state)
);
