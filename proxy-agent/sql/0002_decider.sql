-- samp-cluster-proxy schema version 2: the ingress agents' one decider.
--
-- Several ingress agents run side by side; failovers, drains and moves are
-- decided by one of them and applied by all, in one order. Without
-- Kubernetes (whose Lease decides there) the decider is whoever holds the
-- one row of samp_proxy_decider: an agent takes it when it has expired,
-- renews it while it holds it, and every change of holder (or a take-back
-- after expiry) raises `term`, the fencing token. The decider appends its
-- decisions to samp_proxy_decisions, each insert checking in the same
-- statement that its term still holds an unexpired row; the others read
-- the log in `seq` order. Every time is the database server's
-- (UTC_TIMESTAMP(6)): the agents' clocks never matter.
--
-- Applied by `proxy-agent db migrate` and by the agent itself
-- (`Coordinator::migrate`, the same statements). Idempotent.

-- The decider row. `holder` is '' and `expires_at` long past until the
-- first agent takes it.
CREATE TABLE IF NOT EXISTS samp_proxy_decider (
    name       VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    holder     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    term       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    taken_at   DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
    renewed_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
    expires_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00'
) ENGINE=InnoDB;

INSERT IGNORE INTO samp_proxy_decider (name) VALUES ('ingress');

-- The decisions, in the order every agent applies them. `body` is the
-- decision as JSON (`{"MoveShard":{"from":..,"to":..,"why":..}}`,
-- `{"Drain":{"shard":..,"drained":..}}`).
CREATE TABLE IF NOT EXISTS samp_proxy_decisions (
    seq     BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    term    BIGINT UNSIGNED NOT NULL,
    made_by VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    made_at DATETIME(6) NOT NULL,
    body    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE=InnoDB;

INSERT IGNORE INTO samp_schema_version (version, name) VALUES (2, '0002_decider');
