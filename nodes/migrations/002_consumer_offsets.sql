-- Consumer positions kept with the data they produced, per broker incarnation.
-- A memory broker that restarts is a new incarnation with a new, empty log:
-- positions of the old one mean nothing there (see nodes/consumer.py).
CREATE TABLE consumer_offsets (
    consumer      text NOT NULL,
    incarnation   text NOT NULL,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    next_offset   bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, incarnation, topic, partition)
);
