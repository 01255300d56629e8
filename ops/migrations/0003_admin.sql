-- Admin access: users (0001 made the table), sessions, scoped API tokens, login
-- lockout, the audit log, and the stored detail of request logs.
-- Secrets are never stored: passwords as argon2id strings (libsodium
-- crypto_pwhash_str), session and API tokens as SHA-256 hex of the token.

ALTER TABLE admin_users
    ADD CONSTRAINT admin_users_username_check
        CHECK (username ~ '^[A-Za-z0-9_.@-]{1,100}$'),
    ADD CONSTRAINT admin_users_password_hash_check
        CHECK (password_hash LIKE '$argon2id$%'),
    ADD COLUMN updated_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_login_at timestamptz;

-- One row per login. The token itself goes to the client once.
CREATE TABLE admin_sessions (
    id              bigserial PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id         bigint NOT NULL REFERENCES admin_users(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    client_ip       text
);
CREATE INDEX admin_sessions_user ON admin_sessions(user_id);

-- Tokens for automation: a role of their own, an optional expiry.
CREATE TABLE admin_api_tokens (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash      text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    token_prefix    text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'operator', 'viewer')),
    created_by      text NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Every login, for lockout and for the record. `username` is what was
-- typed, which need not be a user.
CREATE TABLE login_attempts (
    id              bigserial PRIMARY KEY,
    username        text NOT NULL,
    client_ip       text NOT NULL,
    succeeded       boolean NOT NULL,
    attempted_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX login_attempts_user ON login_attempts(username, attempted_at);
CREATE INDEX login_attempts_ip ON login_attempts(client_ip, attempted_at);

-- A subject ('user:NAME' or 'ip:ADDRESS') refused logins until locked_until.
-- Failures are counted again from then on, so a lock ends cleanly.
CREATE TABLE login_lockouts (
    subject         text PRIMARY KEY,
    locked_until    timestamptz NOT NULL
);

-- Every change made through the admin API, written in the transaction that
-- makes it. before/after are the objects as the API shows them, with every
-- secret-looking field masked.
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor           text NOT NULL,
    actor_kind      text NOT NULL
                    CHECK (actor_kind IN ('bootstrap', 'user', 'token', 'anonymous')),
    role            text,
    client_ip       text,
    request_id      text,
    action          text NOT NULL,
    method          text NOT NULL,
    route           text NOT NULL,
    target          text,
    request         jsonb,
    before          jsonb,
    after           jsonb
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE INDEX audit_log_actor ON audit_log(actor, id);

-- What a request log keeps beyond its usage row, at the detail level set in
-- settings 'request_log' (base: nothing here; headers; full: bodies too).
-- Written by the capture in ingress/dispatch (later); bodies arrive already
-- redacted and cut to the configured size.
CREATE TABLE request_details (
    request_id          text PRIMARY KEY,
    captured_at         timestamptz NOT NULL DEFAULT now(),
    level               text NOT NULL CHECK (level IN ('headers', 'full')),
    client_protocol     text,
    request_headers     jsonb,
    response_headers    jsonb,
    request_body        text,
    response_body       text,
    request_truncated   boolean NOT NULL DEFAULT false,
    response_truncated  boolean NOT NULL DEFAULT false
);
CREATE INDEX request_details_time ON request_details(captured_at);

-- Request-log settings, read by the capture and shown by the admin API.
INSERT INTO settings (key, value) VALUES
    ('request_log', '{"level": "base", "max_body_bytes": 65536, "retention_days": 30}')
ON CONFLICT (key) DO NOTHING;
