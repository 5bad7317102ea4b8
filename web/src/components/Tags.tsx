/** Short labels (environments, roles…), separated by spaces so that they read as words, not "devtest". */
export function Tags({ items, prefix = "" }: { items: readonly string[]; prefix?: string }) {
  return (
    <>
      {items.map((item, index) => (
        <span key={item}>
          {index > 0 && " "}
          <span className="tag">
            {prefix}
            {item}
          </span>
        </span>
      ))}
    </>
  );
}
