package billing

import (
	"context"
	"fmt"
	"sort"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/maula-ai/maula-chat/providers"
)

// HistoryLookup tells RecoverDangling what the hub stored for a request: the usage of the
// assistant reply in the tool's chat_history, and whether there is one.
type HistoryLookup func(ctx context.Context, requestID, tool string) (*providers.Usage, bool, error)

func findLimit(limit int64, sort bson.D) *options.FindOptionsBuilder {
	o := options.Find().SetSort(sort)
	if limit > 0 {
		o.SetLimit(limit)
	}
	return o
}

// RecoverDangling finishes what processes that died left half done, for steps older than
// Options.DanglingAfter (younger ones may belong to a live instance):
//
//   - a reservation hold with no settle: settled from the stored reply when settledFromHistory
//     finds one (status abandoned), otherwise refunded in full (a settle charging 0);
//   - a settle entry left pending: finished with the values it recorded;
//   - a grant/reset/plan/open marker: its ledger entry is marked applied and the marker cleared;
//   - a pending ledger entry with no marker: it never changed the balance and is voided.
//
// It returns how many items it resolved. Every step is a guarded update or a unique insert, so
// two instances recovering at once cannot apply anything twice.
func (s *Service) RecoverDangling(ctx context.Context, settledFromHistory HistoryLookup) (int, error) {
	cutoff := s.now().UTC().Add(-s.o.DanglingAfter)
	n := 0
	// 1. Markers still in subscriptions (holdCount counts them).
	cur, err := s.subs.Find(ctx, bson.D{{Key: "holdCount", Value: bson.D{{Key: "$gt", Value: 0}}}})
	if err != nil {
		return 0, fmt.Errorf("billing: recover: find holds: %w", err)
	}
	var subs []subDoc
	if err := cur.All(ctx, &subs); err != nil {
		return 0, fmt.Errorf("billing: recover: read holds: %w", err)
	}
	for _, sub := range subs {
		keys := make([]string, 0, len(sub.Holds))
		for k := range sub.Holds {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, key := range keys {
			h := sub.Holds[key]
			if !h.At.Before(cutoff) {
				continue
			}
			done, err := s.recoverHold(ctx, sub.UserID, key, h, settledFromHistory)
			if err != nil {
				return n, err
			}
			if done {
				n++
			}
		}
	}
	// 2. Pending ledger entries.
	cur, err = s.ledger.Find(ctx, bson.D{{Key: "state", Value: StatePending}, {Key: "createdAt", Value: bson.D{{Key: "$lt", Value: cutoff}}}},
		findLimit(0, bson.D{{Key: "createdAt", Value: 1}}))
	if err != nil {
		return n, fmt.Errorf("billing: recover: find pending: %w", err)
	}
	var pending []Entry
	if err := cur.All(ctx, &pending); err != nil {
		return n, fmt.Errorf("billing: recover: read pending: %w", err)
	}
	for i := range pending {
		e := &pending[i]
		done, err := s.recoverEntry(ctx, e)
		if err != nil {
			return n, err
		}
		if done {
			n++
		}
	}
	return n, nil
}

// recoverHold resolves one old marker.
func (s *Service) recoverHold(ctx context.Context, userID bson.ObjectID, key string, h hold, lookup HistoryLookup) (bool, error) {
	if h.Phase != PhaseReserve {
		e, err := s.findEntry(ctx, h.RequestID, h.Phase)
		if err != nil || e == nil {
			return false, err
		}
		_, err = s.finishOp(ctx, e, key, h.Credits)
		return err == nil, err
	}
	reserve, err := s.findEntry(ctx, h.RequestID, PhaseReserve)
	if err != nil {
		return false, err
	}
	if reserve == nil { // cannot happen (the entry precedes the hold); refund against the hold alone
		reserve = &Entry{RequestID: h.RequestID, UserID: userID, Reserved: h.Credits}
	} else if reserve.State == StatePending {
		if err := s.markApplied(ctx, reserve.ID, -h.Credits, 0, bson.D{{Key: "reserved", Value: h.Credits}, {Key: "reason", Value: "marked by recovery"}}); err != nil {
			return false, err
		}
	}
	res := &Reservation{RequestID: h.RequestID, UserID: userID, Tool: reserve.Tool, Provider: reserve.Provider,
		Model: reserve.Model, Credits: h.Credits, MaxTokens: reserve.MaxTokens}
	// A settle already started wins: settleEntry continues it with its recorded values.
	if st, err := s.findEntry(ctx, h.RequestID, PhaseSettle); err != nil {
		return false, err
	} else if st != nil {
		_, err := s.settleEntry(ctx, st)
		return err == nil, err
	}
	var usage *providers.Usage
	found := false
	if lookup != nil && reserve.Tool != "" {
		usage, found, err = lookup(ctx, h.RequestID, reserve.Tool)
		if err != nil {
			return false, fmt.Errorf("billing: recover %s: history: %w", h.RequestID, err)
		}
	}
	if found && usage != nil && res.Provider != "" {
		_, err := s.Settle(ctx, res, Outcome{Usage: *usage, ProducedOutput: true, Status: StatusAbandoned, At: h.At})
		return err == nil, err
	}
	// Nothing stored: refund everything. No usage is known, so there is nothing to roll up.
	now := s.now().UTC()
	e := &Entry{RequestID: h.RequestID, Phase: PhaseSettle, State: StatePending, UserID: userID,
		Credits: h.Credits, Reserved: h.Credits, Tool: res.Tool, Provider: res.Provider, Model: res.Model,
		Status: StatusAbandoned, Reason: "refunded by recovery: no stored reply", At: now, Day: dayOf(now),
		Rollup: "skip", CreatedAt: now}
	_, err = s.settleEntry(ctx, e)
	return err == nil, err
}

// recoverEntry resolves one old pending ledger entry.
func (s *Service) recoverEntry(ctx context.Context, e *Entry) (bool, error) {
	sub, err := s.readSub(ctx, e.UserID)
	if err != nil {
		return false, err
	}
	switch e.Phase {
	case PhaseReserve:
		if sub != nil {
			if h, ok := sub.Holds[holdKey("r_", e.RequestID)]; ok {
				// Applied and held (a hold too young to recover): mark it.
				return true, s.markApplied(ctx, e.ID, -h.Credits, sub.Features.AICredits, bson.D{{Key: "reserved", Value: h.Credits}})
			}
		}
		st, err := s.findEntry(ctx, e.RequestID, PhaseSettle)
		if err != nil {
			return false, err
		}
		if st != nil && st.State != StateVoid {
			// Released by a settle, so it was applied.
			return true, s.markApplied(ctx, e.ID, -st.Reserved, 0, bson.D{{Key: "reserved", Value: st.Reserved}})
		}
		return true, s.markVoid(ctx, e.ID, "never applied (recovered)")
	case PhaseSettle:
		_, err := s.settleEntry(ctx, e)
		return err == nil, err
	default:
		key := holdKey("o_", e.RequestID+":"+e.Phase)
		if sub != nil {
			if h, ok := sub.Holds[key]; ok {
				_, err := s.finishOp(ctx, e, key, h.Credits)
				return err == nil, err
			}
		}
		return true, s.markVoid(ctx, e.ID, "never applied (recovered)")
	}
}
