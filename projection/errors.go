package projection

import "errors"

// Sentinel errors. Match them with errors.Is.
var (
	// ErrUnknownPolicy marks a resolver name no Registry entry has.
	ErrUnknownPolicy = errors.New("unknown conflict policy")
	// ErrPolicyExists marks a Register under a name already taken.
	ErrPolicyExists = errors.New("conflict policy already registered")
	// ErrResolver marks a resolver that failed, panicked or broke the
	// Decision contract (an outcome it may not return, a rejection with a
	// new state). The projector refuses the event rather than guess or
	// stall the stream behind it: a dead letter whose reason carries the
	// error (a panic's value included) and an invalid receipt.
	ErrResolver = errors.New("resolver failed")
	// ErrInvalidConfig wraps every Config validation problem.
	ErrInvalidConfig = errors.New("invalid projector config")
	// ErrClosed is returned by a Store or Projector used after Close.
	ErrClosed = errors.New("closed")
	// ErrDiverged is returned by Verify when the rebuilt view differs from
	// the live one; the error names the first difference.
	ErrDiverged = errors.New("view diverged from its rebuild")
	// ErrUnavailable marks a Ready that reports the projector unable to
	// apply events for more than a few seconds: no working consumer on
	// EVENTS, or EVENTS or its consumer without quorum. Nothing written
	// meanwhile can be applied (or, without quorum, even stored).
	ErrUnavailable = errors.New("projector unavailable")
	// ErrCheckpoint marks a Commit that would move the checkpoint backwards.
	ErrCheckpoint = errors.New("checkpoint would go backwards")
	// ErrFenced marks a Commit (or a Fence) through a Store fenced with a
	// lease epoch older than the one the view records: another instance
	// took the partition over since (see Fencer); nothing was written. It
	// also marks a Group's publish refused because the holder's lease ran
	// out (the holder was paused or cut off).
	ErrFenced = errors.New("fenced by a newer lease holder")
	// ErrHistoryGone marks a rebuild or Verify that cannot reproduce the
	// view from EVENTS: the stream is missing, no longer holds sequence 1,
	// ends below the checkpoint, or is not the incarnation the view came
	// from (the message says which).
	ErrHistoryGone = errors.New("event history incomplete")
)
