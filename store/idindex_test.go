package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestIndexIDsMakesIDLookupsIndexed asks SQLite for the plan of the exact query FerretDB sends
// for a {_id: v} filter: after IndexIDs it must search an index, not scan the table, in every
// collection, including one created after Migrate; and a second pass creates nothing.
func TestIndexIDsMakesIDLookupsIndexed(t *testing.T) {
	s := openTest(t)
	if !s.Embedded {
		t.Skip("IndexIDs concerns the embedded FerretDB only")
	}
	ctx := context.Background()
	if _, err := s.Migrate(ctx, Schema(testTools), true); err != nil {
		t.Fatal(err)
	}
	late := s.DB("ipintel-db").Collection("created_late")
	if _, err := late.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.IndexIDs(ctx); err != nil || n != 1 {
		t.Fatalf("IndexIDs after a new collection: created %d, %v; want 1 (the new collection)", n, err)
	}
	if n, err := s.IndexIDs(ctx); err != nil || n != 0 {
		t.Fatalf("second IndexIDs: created %d, %v; want 0", n, err)
	}
	for _, dbName := range append([]string{AuthDB}, testTools...) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, dbName+".sqlite")+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		tables, err := queryStrings(ctx, db, `SELECT table_name FROM _ferretdb_collections`)
		if err != nil || len(tables) == 0 {
			t.Fatalf("%s: collections %v, %v", dbName, tables, err)
		}
		for _, tbl := range tables {
			plan, err := queryPlan(ctx, db, tbl)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(plan, "USING INDEX "+tbl+idIndexSuffix) {
				t.Errorf("%s.%s: plan of an _id lookup is %q, want a search of %s", dbName, tbl, plan, tbl+idIndexSuffix)
			}
		}
		_ = db.Close()
	}
	// The lookup still answers through FerretDB, now by the index.
	var got bson.M
	if err := late.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got); err != nil {
		t.Fatalf("find by _id after indexing: %v", err)
	}
}

// queryPlan returns SQLite's plan for the query FerretDB v1.24 runs for a {_id: v} filter.
func queryPlan(ctx context.Context, db *sql.DB, table string) (string, error) {
	rows, err := db.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "`+table+`" WHERE _ferretdb_sjson->'$._id' = ?`, `"a"`)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			return "", err
		}
		out = append(out, detail)
	}
	return strings.Join(out, "; "), rows.Err()
}
