-- schema: the fincore schema itself.  CREATE EXTENSION creates it (fincore.control
-- names it); here it is locked down.  Nobody but the owner creates objects in it,
-- and every name below is schema-qualified so that no search_path can redirect one.

REVOKE ALL ON SCHEMA fincore FROM PUBLIC;
GRANT USAGE ON SCHEMA fincore TO PUBLIC;

-- fincore.max_batch_size for SQL functions (calling C loads the library, which defines the setting).
CREATE FUNCTION fincore._max_batch_size() RETURNS integer
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_max_batch_size_setting';
COMMENT ON FUNCTION fincore._max_batch_size() IS
    'The value of fincore.max_batch_size: the most items one fincore call takes.';
