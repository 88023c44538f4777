-- provstick store schema 2 (SQLite): what the kiosk keeps while it
-- provisions (issue 10). Times are Unix microseconds (UTC).

-- provisioning is the resumable per-machine workflow of specs/amt-psk.md §6:
-- the last confirmed step, what the steps learnt (public: JSON, no secrets)
-- and the secrets they made (sealed with the data key, the PID as associated
-- data), such as the generated admin password.
CREATE TABLE provisioning (
    pid        TEXT    PRIMARY KEY,
    step       INTEGER NOT NULL,
    public     BLOB    NOT NULL,
    secret     BLOB,
    attempts   INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

-- hellos records every hello the listener parsed (and every malformed one),
-- with what the kiosk made of it. pid is '' for a PKI or malformed hello.
CREATE TABLE hellos (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    peer     TEXT    NOT NULL,
    uuid     TEXT    NOT NULL DEFAULT '',
    pid      TEXT    NOT NULL DEFAULT '',
    version  INTEGER NOT NULL DEFAULT 0,
    retry    INTEGER NOT NULL DEFAULT 0,
    outcome  TEXT    NOT NULL
);
CREATE INDEX hellos_pid ON hellos (pid, id);

-- kiosk_ca is the kiosk's own certificate authority: the root certificate
-- (public) and its private key sealed with the data key.
CREATE TABLE kiosk_ca (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cert       BLOB    NOT NULL,
    sealed_key BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
