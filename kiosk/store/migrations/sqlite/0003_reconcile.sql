-- provstick store schema 3 (SQLite): reconciliation of stick ledgers, the
-- discrepancies found, DHCP leases and the audit log (issue 10). Times are
-- Unix microseconds (UTC).

-- A stick the operator declared lost (its allocated entries should be voided).
ALTER TABLE sticks ADD COLUMN lost_at INTEGER;

-- ledger_imports: one row per ledger read (the same bytes imported twice
-- give two rows with the same digest). stick is the label the ledger names
-- ('' when it names none); known says whether this pool has that stick.
CREATE TABLE ledger_imports (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    source       TEXT    NOT NULL,
    stick        TEXT    NOT NULL,
    known        INTEGER NOT NULL,
    digest       TEXT    NOT NULL,
    lines        INTEGER NOT NULL,
    records      INTEGER NOT NULL,
    damaged      INTEGER NOT NULL,
    torn_tail    INTEGER NOT NULL,
    max_seq      INTEGER NOT NULL,
    max_consumed INTEGER NOT NULL,
    station      TEXT    NOT NULL,
    actor        TEXT    NOT NULL
);
CREATE INDEX ledger_imports_stick ON ledger_imports (stick, id);

-- ledger_records: every valid ledger line of this pool's sticks, once (its
-- checksum tells two copies of a stick apart). at is the target's clock.
CREATE TABLE ledger_records (
    stick       TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    sum         TEXT    NOT NULL,
    kase        TEXT    NOT NULL,
    record      INTEGER NOT NULL,
    pid         TEXT    NOT NULL,
    uuid        TEXT    NOT NULL,
    consumed    INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    imported_at INTEGER NOT NULL,
    PRIMARY KEY (stick, seq, sum)
);
CREATE INDEX ledger_records_pid ON ledger_records (pid);

-- discrepancies found when a ledger was imported, kept until resolved; the
-- same finding twice is one row.
CREATE TABLE discrepancies (
    id       INTEGER PRIMARY KEY,
    kind     TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    advice   TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    UNIQUE (kind, subject, detail)
);

-- dhcp_leases: the kiosk's DHCP server's leases, by client MAC.
CREATE TABLE dhcp_leases (
    mac        TEXT    PRIMARY KEY,
    ip         TEXT    NOT NULL UNIQUE,
    hostname   TEXT    NOT NULL DEFAULT '',
    expires_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- audit is the structured record of every provisioning action: who (the
-- kiosk or an operator), what, on which machine.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    station TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    pid     TEXT    NOT NULL DEFAULT '',
    uuid    TEXT    NOT NULL DEFAULT '',
    outcome TEXT    NOT NULL DEFAULT '',
    detail  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_pid ON audit (pid, id);
