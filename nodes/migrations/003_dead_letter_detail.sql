-- What the consumer knows about a dead letter beyond its reason: how many times it was
-- tried, the error the store or handler raised (e.g. PostgreSQL's message), its class
-- (invalid | refused | handler), and the message's Kafka headers (text values), so a
-- message injected by chaos can be found by its `bridgestorm-injection` header.
ALTER TABLE dead_letters
    ADD COLUMN attempts integer NOT NULL DEFAULT 1,
    ADD COLUMN error text,
    ADD COLUMN class text NOT NULL DEFAULT 'invalid',
    ADD COLUMN headers jsonb;
