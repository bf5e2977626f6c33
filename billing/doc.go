// Package billing owns the money of a chat turn: credits (reserve → settle → refund with an
// idempotent ledger), the exact cost in integer micro-dollars, the seed's per-day analytics, the
// cost rollups behind the admin cost report, plan periods and reconciliation.
//
// Money never moves by more than one single-document conditional update of the user's
// subscription, and every such move is journalled in maula-auth-db.credit_ledger under a
// unique (requestId, phase) key. The subscription carries a small map of in-flight markers
// ("holds") written in the same atomic update as the balance change; the marker is what makes
// each balance change idempotent and what lets RecoverDangling tell, after a crash, whether a
// change was applied. docs/billing.md describes the protocol step by step.
//
// Ownership of shared state: the subscription's features.aiCredits, holds and holdCount are
// written only by this package; the ledger and cost_rollups* collections are written only by
// this package; of users, only the plan summary users.subscription, on a plan change;
// chat_history is written by the chat hub and only read here (RecoverDangling's
// callback, Reconcile).
package billing
