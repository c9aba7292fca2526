"""The benchmark scripts' markdown table: one header, one line per result row."""


def print_markdown(columns, rows, cells):
    """`cells(row)` gives a row's cells as strings; a row that failed (key "error") prints its error."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['batch']} | error: {r['error']} |")
        else:
            print("| " + " | ".join(cells(r)) + " |")
