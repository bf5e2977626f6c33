package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // the driver FerretDB's SQLite backend uses; registers "sqlite"
)

// Why this file exists: FerretDB v1.24's SQLite backend pushes a filter of exactly {_id: v}
// down as `WHERE _ferretdb_sjson->'$._id' = ?`, but the unique index it creates for _id is on
// the expression `_ferretdb_sjson->"_id"`. SQLite uses an expression index only for the same
// expression, so every lookup by _id scanned the whole table (measured: 197 ms for one
// find by _id in a 76,000-document collection). IndexIDs adds, beside FerretDB's own index, an
// index on exactly the expression its queries use. SQLite maintains it on every write; FerretDB
// neither knows nor needs to know, and dropping a collection drops its table with the index.

// idIndexSuffix names our index after the table it belongs to.
const idIndexSuffix = "_maula_id"

// IndexIDs makes lookups by _id use an index in every collection of the embedded server, and
// returns how many indexes it created. It is idempotent and cheap when nothing is missing, so
// it runs after Migrate and again from the retention sweeper for collections created since.
// On an external MongoDB it does nothing.
func (s *Store) IndexIDs(ctx context.Context) (int, error) {
	if !s.Embedded {
		return 0, nil
	}
	files, err := filepath.Glob(filepath.Join(s.dir, "*.sqlite"))
	if err != nil {
		return 0, fmt.Errorf("index ids: %w", err)
	}
	created := 0
	for _, f := range files {
		n, err := indexIDsIn(ctx, f)
		created += n
		if err != nil {
			return created, err
		}
	}
	return created, nil
}

func indexIDsIn(ctx context.Context, file string) (int, error) {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, fmt.Errorf("index ids: open %s: %w", filepath.Base(file), err)
	}
	defer db.Close()
	// The table of FerretDB's collections, and the indexes that already exist.
	tables, err := queryStrings(ctx, db, `SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0, nil // a database FerretDB has not initialised yet
		}
		return 0, fmt.Errorf("index ids: list collections of %s: %w", filepath.Base(file), err)
	}
	have, err := queryStrings(ctx, db, `SELECT name FROM sqlite_master WHERE type = 'index'`)
	if err != nil {
		return 0, fmt.Errorf("index ids: list indexes of %s: %w", filepath.Base(file), err)
	}
	exists := make(map[string]bool, len(have))
	for _, h := range have {
		exists[h] = true
	}
	created := 0
	for _, t := range tables {
		name := t + idIndexSuffix
		if exists[name] {
			continue
		}
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, name, t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped since we listed it
			}
			return created, fmt.Errorf("index ids: %s: %w", t, err)
		}
		created++
	}
	return created, nil
}

func queryStrings(ctx context.Context, db *sql.DB, q string) ([]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, errors.Join(rows.Err(), rows.Close())
}
