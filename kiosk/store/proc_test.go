package store

// childEnv, when set, makes the test binary a child process for the
// concurrency and crash tests instead of running tests.
const childEnv = "STORE_TEST_CHILD"

func runChild(spec string) int { return 2 }
