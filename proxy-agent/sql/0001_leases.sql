-- samp-cluster-proxy schema version 1: account leases.
--
-- One account is logged in on one shard only. A shard takes the account's
-- lease at login (samp_lease_acquire), renews all of its leases in one call
-- on a timer (samp_lease_renew) and gives a lease back at logout
-- (samp_lease_release). Every lease carries a fencing token, new at every
-- acquire and every move; a gamemode guards its writes with it
-- (samp_lease_holds in a WHERE, or samp_lease_fence inside a transaction),
-- so a shard that was failed over and comes back as a zombie cannot write
-- for, nor take back, an account that moved on. The agent moves leases with
-- the players (samp_lease_move_shard at a failover or `migrate --from`,
-- samp_lease_move_clients when chosen players move).
--
-- Applied by `proxy-agent db migrate --config FILE`, which also writes the
-- lease time from the config. The file is also valid input for the `mariadb`
-- command-line client (`mariadb DB < 0001_leases.sql`). Every statement is
-- idempotent: running it again changes nothing but the procedures' text.
-- Needs MariaDB 10.3 or newer (sequences, CREATE OR REPLACE PROCEDURE).

CREATE TABLE IF NOT EXISTS samp_schema_version (
    version    INT UNSIGNED NOT NULL PRIMARY KEY,
    name       VARCHAR(128) NOT NULL,
    applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row: the lease time. `proxy-agent db migrate` writes the config's
-- `leases.lease_seconds` here; 30 until it does.
CREATE TABLE IF NOT EXISTS samp_lease_settings (
    id            TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    lease_seconds INT UNSIGNED NOT NULL,
    CONSTRAINT samp_lease_settings_one_row CHECK (id = 1),
    CONSTRAINT samp_lease_settings_seconds CHECK (lease_seconds BETWEEN 1 AND 86400)
) ENGINE=InnoDB;

INSERT IGNORE INTO samp_lease_settings (id, lease_seconds) VALUES (1, 30);

-- The leases. `account` compares case-insensitively (SA:MP names do), so
-- "Bob" and "bob" are one account. `confirmed` is 1 for a lease its shard
-- took with samp_lease_acquire and 0 for one the agent moved to it: a moved
-- lease holds the account for one lease time while the player reconnects,
-- and only becomes the shard's to renew when the shard acquires it at the
-- player's login there (so a player who never arrives does not keep the
-- account locked on a shard that renews blindly).
CREATE TABLE IF NOT EXISTS samp_leases (
    account     VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL,
    shard       VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    client      VARCHAR(21) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    token       BIGINT UNSIGNED NOT NULL,
    expires_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    acquired_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    confirmed   TINYINT UNSIGNED NOT NULL DEFAULT 1,
    renewals    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (account),
    KEY samp_leases_by_shard (shard, expires_at),
    KEY samp_leases_by_client (client)
) ENGINE=InnoDB;

-- Fencing tokens: globally increasing, never reused (a restart skips ahead
-- by at most the cache).
CREATE SEQUENCE IF NOT EXISTS samp_lease_token_seq
    START WITH 1 INCREMENT BY 1 MINVALUE 1 CACHE 1000 NOCYCLE;

DELIMITER $$

-- The configured lease time in seconds (30 when the settings row is missing).
CREATE OR REPLACE FUNCTION samp_lease_seconds() RETURNS INT UNSIGNED
    NOT DETERMINISTIC READS SQL DATA
BEGIN
    RETURN COALESCE((SELECT lease_seconds FROM samp_lease_settings WHERE id = 1), 30);
END$$

-- Take the lease of an account at login. Returns one row:
--   status        'ok' (the lease is yours) or 'held' (another shard holds a live one)
--   token         the new fencing token when 'ok', 0 when 'held'
--   holder        the shard that holds the lease now (yours when 'ok')
--   expires_in_ms milliseconds until the holder's lease expires
-- A live lease of the same shard is taken again with a new token (the old
-- one turns stale). Race-free: of concurrent acquires of one account by
-- several shards exactly one gets 'ok', the others 'held' with its name.
-- Called outside a transaction it runs in a transaction of its own (and
-- retries a deadlock); inside the caller's, it joins it.
CREATE OR REPLACE PROCEDURE samp_lease_acquire(
    IN p_account VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci,
    IN p_shard   VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_client  VARCHAR(21) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
    MODIFIES SQL DATA
    COMMENT 'samp-cluster-proxy: take an account lease; one row (status, token, holder, expires_in_ms)'
BEGIN
    DECLARE v_own_tx  BOOLEAN DEFAULT (@@in_transaction = 0);
    DECLARE v_try     INT DEFAULT 0;
    DECLARE v_retry   BOOLEAN DEFAULT TRUE;
    DECLARE v_now     TIMESTAMP(3);
    DECLARE v_token   BIGINT UNSIGNED;
    DECLARE v_secs    INT UNSIGNED;
    DECLARE v_holder  VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    DECLARE v_current BIGINT UNSIGNED;
    DECLARE v_expires TIMESTAMP(3);

    IF p_account IS NULL OR p_account = '' OR p_shard IS NULL OR p_shard = '' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'samp_lease_acquire: account and shard must not be empty';
    END IF;
    SET v_secs = samp_lease_seconds();

    attempt: WHILE v_retry DO
        SET v_try = v_try + 1;
        SET v_retry = FALSE;
        BEGIN
            -- A deadlock or lock wait timeout rolls our own transaction
            -- back; try again (three times). In the caller's transaction
            -- the error is the caller's to handle.
            DECLARE EXIT HANDLER FOR 1213, 1205
            BEGIN
                IF v_own_tx AND v_try < 3 THEN
                    ROLLBACK;
                    SET v_retry = TRUE;
                ELSE
                    IF v_own_tx THEN ROLLBACK; END IF;
                    RESIGNAL;
                END IF;
            END;
            DECLARE EXIT HANDLER FOR SQLEXCEPTION
            BEGIN
                IF v_own_tx THEN ROLLBACK; END IF;
                RESIGNAL;
            END;

            IF v_own_tx THEN
                START TRANSACTION;
            END IF;
            SET v_now = NOW(3);
            SET v_token = NEXTVAL(samp_lease_token_seq);
            -- One statement decides. Its assignments run left to right and
            -- each sees the ones before it: the first decides on the old row
            -- (expired, or the same shard) and writes our fresh token; the
            -- others follow on `token = our token`, which only that decision
            -- can make true.
            INSERT INTO samp_leases (account, shard, client, token, expires_at, acquired_at, confirmed, renewals)
            VALUES (p_account, p_shard, p_client, v_token, v_now + INTERVAL v_secs SECOND, v_now, 1, 0)
            ON DUPLICATE KEY UPDATE
                token       = IF(expires_at <= v_now OR shard = VALUES(shard), VALUES(token), token),
                shard       = IF(token = VALUES(token), VALUES(shard), shard),
                client      = IF(token = VALUES(token), VALUES(client), client),
                expires_at  = IF(token = VALUES(token), VALUES(expires_at), expires_at),
                acquired_at = IF(token = VALUES(token), VALUES(acquired_at), acquired_at),
                confirmed   = IF(token = VALUES(token), 1, confirmed),
                renewals    = IF(token = VALUES(token), 0, renewals);
            -- The row is locked by the statement above; a locking read sees
            -- its newest version whatever the caller's snapshot.
            SELECT shard, token, expires_at INTO v_holder, v_current, v_expires
                FROM samp_leases WHERE account = p_account FOR UPDATE;
            IF v_own_tx THEN
                COMMIT;
            END IF;
        END;
    END WHILE attempt;

    SELECT IF(v_current = v_token, 'ok', 'held') AS status,
           IF(v_current = v_token, v_token, 0) AS token,
           v_holder AS holder,
           GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_now, v_expires) DIV 1000) AS expires_in_ms;
END$$

-- Renew every lease the shard holds and took itself, in one statement.
-- Returns one row: renewed (how many). An expired lease is not revived: it
-- is lost (another shard may have it), and the shard must acquire it again.
CREATE OR REPLACE PROCEDURE samp_lease_renew(
    IN p_shard VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
    MODIFIES SQL DATA
    COMMENT 'samp-cluster-proxy: renew all live leases of a shard; one row (renewed)'
BEGIN
    DECLARE v_secs INT UNSIGNED DEFAULT samp_lease_seconds();
    DECLARE v_n BIGINT DEFAULT 0;
    -- `renewals` changes in every row, so ROW_COUNT() counts every lease
    -- renewed (also when renewed twice in one millisecond).
    UPDATE samp_leases
        SET expires_at = NOW(3) + INTERVAL v_secs SECOND, renewals = renewals + 1
        WHERE shard = p_shard AND expires_at > NOW(3) AND confirmed = 1;
    SET v_n = ROW_COUNT();
    SELECT v_n AS renewed;
END$$

-- Give a lease back (logout). Only the current token releases it. Returns
-- one row: status 'released' or 'stale' (the token is not the lease's: it
-- moved, was taken again, or there is no lease), and holder (the shard that
-- holds a live lease of the account now, or NULL).
CREATE OR REPLACE PROCEDURE samp_lease_release(
    IN p_account VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci,
    IN p_token   BIGINT UNSIGNED)
    MODIFIES SQL DATA
    COMMENT 'samp-cluster-proxy: release a lease with its token; one row (status, holder)'
BEGIN
    DECLARE v_n BIGINT DEFAULT 0;
    DELETE FROM samp_leases WHERE account = p_account AND token = p_token;
    SET v_n = ROW_COUNT();
    SELECT IF(v_n > 0, 'released', 'stale') AS status,
           (SELECT shard FROM samp_leases WHERE account = p_account AND expires_at > NOW(3)) AS holder;
END$$

-- 1 when the token is the live lease's of the account, else 0. For a
-- gamemode's own statements: UPDATE players SET ... WHERE name = ? AND
-- samp_lease_holds(?, ?). A plain read: to keep a move out until your
-- transaction commits, use samp_lease_fence.
CREATE OR REPLACE FUNCTION samp_lease_holds(
    p_account VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci,
    p_token   BIGINT UNSIGNED) RETURNS TINYINT
    NOT DETERMINISTIC READS SQL DATA
    COMMENT 'samp-cluster-proxy: 1 when the token is the account''s live lease token'
BEGIN
    RETURN EXISTS (SELECT 1 FROM samp_leases
                   WHERE account = p_account AND token = p_token AND expires_at > NOW(3));
END$$

-- Inside the caller's transaction: lock the lease row (shared) until the
-- transaction ends, and fail with SQLSTATE 45000 'stale fencing token'
-- unless the token is the account's live lease token. A move or a takeover
-- of the account waits for the transaction; writes after a successful
-- fence are the lease holder's.
CREATE OR REPLACE PROCEDURE samp_lease_fence(
    IN p_account VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci,
    IN p_token   BIGINT UNSIGNED)
    READS SQL DATA
    COMMENT 'samp-cluster-proxy: lock the lease in the caller''s transaction; SQLSTATE 45000 when the token is stale'
BEGIN
    DECLARE v_token   BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_expires TIMESTAMP(3) DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_token = NULL;
    SELECT token, expires_at INTO v_token, v_expires
        FROM samp_leases WHERE account = p_account LOCK IN SHARE MODE;
    IF v_token IS NULL OR p_token IS NULL OR v_token <> p_token OR v_expires <= NOW(3) THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'stale fencing token';
    END IF;
END$$

-- The live leases of a shard, one row each: account, client, token,
-- expires_in_ms, confirmed (0: moved here, not yet acquired by the shard).
CREATE OR REPLACE PROCEDURE samp_lease_list(
    IN p_shard VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
    READS SQL DATA
    COMMENT 'samp-cluster-proxy: the live leases of a shard'
BEGIN
    SELECT account, client, token,
           TIMESTAMPDIFF(MICROSECOND, NOW(3), expires_at) DIV 1000 AS expires_in_ms,
           confirmed
        FROM samp_leases
        WHERE shard = p_shard AND expires_at > NOW(3)
        ORDER BY account;
END$$

-- The agent, at a failover or `migrate --from`: every live lease of shard
-- p_from goes to p_to with a new token and a fresh lease time, in one
-- statement (one transaction). The old tokens are stale from then on.
-- Returns one row: moved.
CREATE OR REPLACE PROCEDURE samp_lease_move_shard(
    IN p_from VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_to   VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
    MODIFIES SQL DATA
    COMMENT 'samp-cluster-proxy: move every live lease of a shard to another; one row (moved)'
BEGIN
    DECLARE v_secs INT UNSIGNED DEFAULT samp_lease_seconds();
    DECLARE v_n BIGINT DEFAULT 0;
    IF p_from IS NULL OR p_to IS NULL OR p_to = '' OR p_from = p_to THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'samp_lease_move_shard: from and to must be two shards';
    END IF;
    UPDATE samp_leases
        SET shard = p_to, token = NEXTVAL(samp_lease_token_seq),
            expires_at = NOW(3) + INTERVAL v_secs SECOND, confirmed = 0, renewals = 0
        WHERE shard = p_from AND expires_at > NOW(3);
    SET v_n = ROW_COUNT();
    SELECT v_n AS moved;
END$$

-- The agent, when chosen players move: the live leases of shard p_from
-- whose client is in p_clients go to p_to with new tokens, in one statement.
-- p_clients is a comma-separated list of 'ip:port' (that client) or 'ip'
-- (every port of that address), no spaces. Returns one row: moved.
CREATE OR REPLACE PROCEDURE samp_lease_move_clients(
    IN p_from    VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_clients TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_to      VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
    MODIFIES SQL DATA
    COMMENT 'samp-cluster-proxy: move the live leases of chosen clients to another shard; one row (moved)'
BEGIN
    DECLARE v_secs INT UNSIGNED DEFAULT samp_lease_seconds();
    DECLARE v_n BIGINT DEFAULT 0;
    IF p_from IS NULL OR p_to IS NULL OR p_to = '' OR p_from = p_to THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'samp_lease_move_clients: from and to must be two shards';
    END IF;
    UPDATE samp_leases
        SET shard = p_to, token = NEXTVAL(samp_lease_token_seq),
            expires_at = NOW(3) + INTERVAL v_secs SECOND, confirmed = 0, renewals = 0
        WHERE shard = p_from AND expires_at > NOW(3)
          AND (FIND_IN_SET(client, p_clients) > 0
               OR FIND_IN_SET(SUBSTRING_INDEX(client, ':', 1), p_clients) > 0);
    SET v_n = ROW_COUNT();
    SELECT v_n AS moved;
END$$

DELIMITER ;

INSERT IGNORE INTO samp_schema_version (version, name) VALUES (1, '0001_leases');
