package gateway

// ReapedPast reports whether tenant/client's log is open and whether a
// reaper turn has judged it while it was unused and idle for longer than
// IdleClose (its last use before that turn's cutoff): a log open with
// reaped true is one the reaper chose to keep.
func (w *Writer) ReapedPast(tenant, client string) (open, reaped bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.logs[logKey{tenant, client}]
	if l == nil {
		return false, false
	}
	return true, l.refs == 0 && l.used.Before(w.reapCutoff)
}
