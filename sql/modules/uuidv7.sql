-- uuidv7: time-ordered ids (src/uuidv7.c).

CREATE FUNCTION fincore.uuidv7() RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_uuidv7';
COMMENT ON FUNCTION fincore.uuidv7() IS
    'A time-ordered UUID (RFC 9562 version 7): millisecond Unix time, sub-millisecond fraction, 62 random bits; strictly increasing within a backend.';
