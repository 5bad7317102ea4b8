import type { ReactNode } from "react";

/**
 * A table of records (users, teams, audit entries, figures): scrolls sideways inside its
 * own box on a narrow screen, is named for assistive technology, and has a header cell per
 * column. The rows are the children (`<tr>` elements).
 */
export function DataTable({
  label,
  labelledBy,
  columns,
  children,
}: {
  /** The table's accessible name, or… */
  label?: string;
  /** …the id of the heading that names it. */
  labelledBy?: string;
  columns: readonly string[];
  children: ReactNode;
}) {
  return (
    <div className="table-scroll">
      <table className="data" aria-label={label} aria-labelledby={labelledBy}>
        <thead>
          <tr>
            {columns.map((column) => (
              <th scope="col" key={column}>
                {column}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
