// Package batcher is the generic micro-batcher Batcher[In, Out] that gathers concurrent calls into
// model batches (max rows, max queue delay, preferred sizes, bounded queue, deadlines, ordered
// fan-out of results). It imports no project package. It arrives with the micro-batching issue
// (#3); until then the pipeline sends each call to its backend as one batch.
package batcher
