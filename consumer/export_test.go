package consumer

// CommitHook makes f run inside each commit between reading the offsets
// and sending them; periodic tells the commit loop's commits from those
// on revoke and shutdown.
func CommitHook(f func(periodic bool)) Option {
	return func(c *config) { c.commitHook = f }
}
