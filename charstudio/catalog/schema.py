"""The catalog's schema as a list of forward migrations.

Migration ``n`` (1-based) takes a catalog from schema version ``n - 1`` to ``n``. A released
migration is never edited: schema changes are new entries at the end of the list, so a
catalog written by any older charstudio can be brought forward step by step.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: project settings, jobs, images with their generation parameters, decisions and the
    # undo history of decisions.
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL               -- JSON
    );

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,               -- import, generate, train-ti, grid, analyze ...
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'paused', 'done', 'failed', 'canceled')),
        progress REAL,                    -- 0..1 while running
        result TEXT,                      -- JSON
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_status ON jobs (status);

    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,        -- POSIX, relative to the project; absolute if in place
        sha256 TEXT NOT NULL UNIQUE,
        file_size INTEGER NOT NULL,
        file_mtime REAL NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT NOT NULL,             -- PNG, JPEG, WEBP
        added_at TEXT NOT NULL,
        prompt TEXT,
        negative_prompt TEXT,
        seed INTEGER,
        steps INTEGER,
        sampler TEXT,                     -- normalized: "DPM++ 2M"
        schedule_type TEXT,               -- "Karras", or NULL
        cfg_scale REAL,
        size TEXT,                        -- generation size as written: "512x512"
        model TEXT,
        model_hash TEXT,
        clip_skip INTEGER,
        infotext TEXT,                    -- raw A1111 parameters text
        extras TEXT NOT NULL DEFAULT '{}',  -- JSON: settings keys without a column, in order
        sweep TEXT NOT NULL DEFAULT '{}',   -- JSON: sweep coordinates {"X": "front shot", ...}
        job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL
    );
    CREATE INDEX images_seed ON images (seed);
    CREATE INDEX images_job ON images (job_id);

    CREATE TABLE decisions (
        image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
        flag TEXT NOT NULL DEFAULT 'none' CHECK (flag IN ('pick', 'reject', 'none')),
        stars INTEGER NOT NULL DEFAULT 0 CHECK (stars BETWEEN 0 AND 5),
        color TEXT CHECK (color IN ('red', 'yellow', 'green', 'blue', 'purple')),
        reject_reason TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX decisions_flag ON decisions (flag);

    -- One row per user action (a key press over a selection): the unit of undo and redo.
    CREATE TABLE decision_actions (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE decision_changes (
        id INTEGER PRIMARY KEY,
        action_id INTEGER NOT NULL REFERENCES decision_actions (id) ON DELETE CASCADE,
        image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        before TEXT NOT NULL,             -- JSON of the decision fields
        after TEXT NOT NULL
    );
    CREATE INDEX decision_changes_action ON decision_changes (action_id);
    CREATE INDEX decision_changes_image ON decision_changes (image_id);
    """,
    # 2: training runs, their images and checkpoints, and comparison grids.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('ti', 'lora')),
        name TEXT NOT NULL,
        folder TEXT NOT NULL UNIQUE,      -- relative to the project: runs/<run>
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'paused', 'done', 'failed', 'canceled')),
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL
    );
    CREATE TABLE run_images (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        PRIMARY KEY (run_id, image_id)
    );
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        path TEXT NOT NULL UNIQUE,
        loss REAL,
        sha256 TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX checkpoints_run_step ON checkpoints (run_id, step);

    CREATE TABLE grids (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs (id) ON DELETE SET NULL,
        params TEXT NOT NULL DEFAULT '{}',
        path TEXT,                        -- the saved grid image, relative to the project
        chosen_step INTEGER,
        created_at TEXT NOT NULL,
        job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL
    );
    CREATE TABLE grid_cells (
        grid_id INTEGER NOT NULL REFERENCES grids (id) ON DELETE CASCADE,
        x INTEGER NOT NULL,
        y INTEGER NOT NULL,
        z INTEGER NOT NULL DEFAULT 0,
        image_id INTEGER REFERENCES images (id) ON DELETE SET NULL,
        step INTEGER,
        seed INTEGER,
        score REAL,
        PRIMARY KEY (grid_id, x, y, z)
    );
    """,
    # 3: training sets: the images chosen to train on ("Use picks as training set").
    """
    CREATE TABLE training_sets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE training_set_images (
        set_id INTEGER NOT NULL REFERENCES training_sets (id) ON DELETE CASCADE,
        image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        PRIMARY KEY (set_id, image_id)
    );
    """,
    # 4: face and duplicate analysis, cached per image and redone when the file changes;
    # checkpoint-grid cells as files with their face counts; exported embeddings.
    """
    CREATE TABLE analyses (
        image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL,             -- the file's when analyzed: another file is redone
        version INTEGER NOT NULL,         -- charstudio.analysis ANALYSIS_VERSION
        faces INTEGER NOT NULL,           -- all detections; flags use their own threshold
        result TEXT NOT NULL,             -- JSON FaceAnalysis without the embedding
        embedding BLOB,                   -- float32 identity vector of the main face
        embedding_model TEXT,
        phash TEXT,                       -- 64-bit perceptual hash as 16 hex digits
        analyzed_at TEXT NOT NULL
    );
    -- Checkpoint grids keep their cell images out of the culling catalog: a cell is a file.
    ALTER TABLE grid_cells ADD COLUMN path TEXT;       -- relative to the project
    ALTER TABLE grid_cells ADD COLUMN faces INTEGER;   -- faces detected in the cell image
    -- Exported embeddings: which step of which run went where.
    CREATE TABLE exports (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs (id) ON DELETE SET NULL,
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,               -- absolute, or relative to the project
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 5: a checkpoint-grid cell that failed (NaN) says why; it has no file and no score.
    """
    ALTER TABLE grid_cells ADD COLUMN error TEXT;
    """,
    # 6: every decision action belongs to the undo stack of the session (one open catalog:
    # the app, a command) that made it, so one process's undo, redo or new action never
    # reaches into another's. NULL: a session that has ended (every action made before this
    # version too); any session may undo those once its own are used up.
    """
    ALTER TABLE decision_actions ADD COLUMN session TEXT;
    ALTER TABLE decision_actions ADD COLUMN undo_order INTEGER;  -- place in its redo stack
    CREATE INDEX decision_actions_session ON decision_actions (session, undone, id);
    """,
    # 7: captions the artist edited (the caption editor, bulk find/replace, tags added or
    # removed); an image without a row has the caption derived from its prompt.
    """
    CREATE TABLE captions (
        image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
