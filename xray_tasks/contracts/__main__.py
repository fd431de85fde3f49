"""``python -m xray_tasks.contracts``: the field tables of every contract, as ``docs/CONTRACTS.md`` carries them."""

from xray_tasks.contracts import documented, table

for cls in documented():
    print(table(cls))
    print()
