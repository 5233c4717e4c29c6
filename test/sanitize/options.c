/*
 * options.c — sanitizer options compiled into fincore's sanitized build
 * (./scripts/test --sanitize); never part of a normal build.
 *
 * A backend cannot read ASAN_OPTIONS: PostgreSQL's ps display overwrites the
 * environment.  The runtimes ask these functions instead.
 *
 *   - halt_on_error, abort_on_error: the first report ends the backend; the
 *     report goes to stderr, which is the server log the test script scans;
 *   - detect_leaks=0: a backend's memory lives in memory contexts that
 *     PostgreSQL frees wholesale, or not at all at exit (LeakSanitizer only
 *     reports noise there);
 *   - verify_asan_link_order=0: postgres itself is not instrumented, and the
 *     runtime comes in with fincore.so, not first (preloading libasan into
 *     postgres hangs in bindtextdomain at start).  So ASan checks fincore's
 *     globals and the memory it mallocs itself; palloc'd memory lives in
 *     context blocks it cannot see into.  UBSan checks everything it can:
 *     overflow, shifts, alignment, bounds, object sizes, null pointers;
 *   - detect_stack_use_after_return=0, and the build's --param asan-stack=0:
 *     ereport(ERROR) unwinds with siglongjmp past instrumented frames, which
 *     would otherwise be reported as stack errors that are not.
 */
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);

const char *
__asan_default_options(void)
{
	return "halt_on_error=1:abort_on_error=1:detect_leaks=0:verify_asan_link_order=0:"
		"detect_stack_use_after_return=0:handle_segv=0:allow_user_segv_handler=1";
}

const char *
__ubsan_default_options(void)
{
	return "halt_on_error=1:abort_on_error=1:print_stacktrace=1";
}
