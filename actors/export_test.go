package actors

import "context"

// RecoverForBench recovers a new entity of kind k with the given id, as the
// runtime does on an entity's first message.
func RecoverForBench(rt *Runtime, k Behavior, id string) error {
	return k.newEntity(rt, id).recover(context.Background())
}
