package consumer

import (
	"time"
)

// deadLetter sends d to the dead-letter topic and reports whether the
// record is done.
func (rt *runtime) deadLetter(d *delivery, err error, first time.Time) bool {
	rt.c.log.Error("dead-lettering is not wired yet; record left not done", "topic", d.rec.Topic,
		"partition", d.rec.Partition, "offset", d.rec.Offset, "err", err)
	return false
}
